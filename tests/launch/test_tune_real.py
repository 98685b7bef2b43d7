"""`ds-wizard tune` for real: short DeepSpeed runs on two CPU ranks, one of them over a
host-memory limit (its address space capped by tests/rank_scripts/address_cap).

One tune of at most four candidates of three steps; several minutes on a busy 2-core
machine, which is why it is in the slow lane.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from fakes import kill_leftovers, process_tree

from ds_wizard.core.check.checker import check_config, load_config_file

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CAP = REPO / "tests" / "rank_scripts" / "address_cap"
TIMEOUT = 1500  # four candidates' start-ups on a shared 2-core machine


def _ours(marker: str) -> list[int]:
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(marker in part for part in (p.info["cmdline"] or [])):
                out.append(p.info["pid"])
        except psutil.Error:
            continue
    return out


def test_tune_measures_real_runs_and_an_over_the_limit_one_does_not_fit(
        tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(CAP), str(REPO), env.get("PYTHONPATH", "")])
    env["DS_WIZARD_TEST_CAP_ABOVE_MICRO"] = "4"
    env["DS_WIZARD_DATA_DIR"] = str(tmp_path / "data")
    env["DS_WIZARD_CONFIG_DIR"] = str(tmp_path / "config")
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "ds_wizard.cli", "tune", "--preset", "tiny_mamba",
           "--num-gpus", "2", "--global-batch", "16", "--steps", "3", "--max-candidates",
           "4", "--runs-dir", str(runs), "--json"]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen: set[int] = set()
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        seen |= process_tree(proc)
        kill_leftovers(proc, seen)
        raise
    wall = time.monotonic() - t0
    assert proc.returncode == 0, err[-3000:]
    result = json.loads(out)
    cands = {c["micro_batch"]: c for c in result["candidates"]}
    assert len(cands) >= 3 and {c["global_batch"] for c in cands.values()} == {16}
    assert next(iter(cands)) == 4  # the plan's choice first
    capped = cands[8]
    assert capped["status"] == "does not fit", capped
    assert "out of memory" in capped["note"]
    below = [c for m, c in cands.items() if m < 8]
    assert len(below) >= 2  # the start and at least one below it
    for c in below:
        assert c["fits"], c
        assert c["measured_peak_bytes"] > 2**28 and len(c["rank_peaks_bytes"]) == 2
        assert c["tokens_per_s"] > 0 and c["steps_timed"] == 2
        assert c["predicted_peak_bytes"] > 0 and c["error_pct"] is not None
    chosen = result["chosen"]
    # below the one that ran out of memory; which one is fastest is the machine's business
    assert chosen["micro_batch"] < 8 and chosen["micro_batch"] in cands
    cfg = load_config_file(tmp_path / "deepspeed_config.json")
    assert cfg["train_micro_batch_size_per_gpu"] == chosen["micro_batch"]
    assert check_config(cfg, 2).valid
    assert not _ours(str(runs)), "a candidate's process outlived the tune"
    assert not [p for p in runs.iterdir() if p.is_dir()]  # scratch runs removed
    assert (tmp_path / "data" / "measured.json").is_file()
    print(f"tune wall time {wall:.0f} s; "
          + ", ".join(f"m{m}: {c['status']} {c['tokens_per_s']} tok/s "
                      f"{(c['measured_peak_bytes'] or 0) / 2**30:.2f} GiB"
                      for m, c in cands.items()), file=sys.stderr)
