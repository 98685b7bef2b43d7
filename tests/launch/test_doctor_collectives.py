"""``ds-wizard doctor --collectives``: a real gloo all-reduce over two CPU ranks, and a
rank that never joins named within the timeout (separate processes: slow lane)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ds_wizard.cli import main
from ds_wizard.core.runs.doctor import judge_collectives
from ds_wizard.launch.doctor import run_collectives

pytestmark = pytest.mark.slow


def test_two_gloo_ranks_all_reduce_and_report_bandwidth(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DS_WIZARD_CACHE_DIR", str(tmp_path / "cache"))
    done = CliRunner().invoke(main, ["doctor", "--preset", "tiny_mamba", "--collectives",
                                     "--json"])
    assert done.exit_code == 0, done.output
    row = next(c for c in json.loads(done.stdout)["checks"] if c["id"] == "collectives")
    assert row["status"] == "ok" and "bus bandwidth" in row["detail"]
    assert row["title"] == "collectives (gloo, 2 ranks)"


def test_a_rank_that_does_not_join_is_named() -> None:
    res = run_collectives(3, "gloo", timeout=5, nbytes=1 << 20, start=[0, 1])
    assert sorted(res.joined) == [0, 1]
    check = judge_collectives(res, 5)
    assert check.status == "fail" and "rank(s) 2 did not join within 5 s" in check.detail
