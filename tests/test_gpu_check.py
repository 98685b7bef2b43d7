"""benchmarks/gpu_check.py --self-test: the one-shot GPU check's CPU-possible phases."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_self_test_passes_and_writes_its_results(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"),
                           "--self-test", "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    phases = json.loads((tmp_path / "gpu_check.json").read_text())["phases"]
    assert [p["status"] for p in phases] == ["ok", "ok", "ok"]
    detect = phases[0]
    assert all(detect["checks"].values()) and len(detect["checks"]) == 6
    assert detect["skipped"] == ["GPU 1 (NVML index): Insufficient Permissions"]
    assert "| 1. NVML detection" in (tmp_path / "gpu_check.md").read_text()


def test_gpu_check_stages_no_wheels_in_git() -> None:
    tracked = subprocess.run(["git", "ls-files", "*.whl", ".gpucheck"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    assert tracked == ""


def _load_gpu_check():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gpu_check_module",
                                                  ROOT / "benchmarks" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GPU_CHECK = _load_gpu_check()


@pytest.mark.parametrize("name", sorted(GPU_CHECK.CHECKS))
def test_the_self_test_fails_when_a_rule_is_broken(name: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A rule that accepts anything (as a bug would make it) fails the self-test."""
    monkeypatch.setitem(GPU_CHECK.CHECKS, name, lambda *a, **k: True)
    rec = GPU_CHECK.Recorder(tmp_path, deadline=float("inf"))
    rec.run(9, "rules", GPU_CHECK.phase_rules)
    assert rec.phases[0]["status"] == "FAILED"
    failed = [k for k, ok in rec.phases[0]["checks"].items() if not ok]
    assert failed == [f"{name} rejects the bad fake"]


def test_the_shipped_rules_pass_and_a_broken_one_fails_the_whole_run(tmp_path: Path) -> None:
    rec = GPU_CHECK.Recorder(tmp_path, deadline=float("inf"))
    rec.run(9, "rules", GPU_CHECK.phase_rules)
    assert rec.phases[0]["status"] == "ok"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"),
                           "--self-test", "--out", str(tmp_path / "broken")],
                          capture_output=True, text=True, timeout=180,
                          env={**os.environ, "GPU_CHECK_BREAK": "rank_backend"})
    assert done.returncode == 1, done.stdout + done.stderr


def test_the_backend_is_read_from_the_ranks_own_line() -> None:
    out = ("ℹ️  backend mamba_ssm: mamba-ssm's kernels with causal-conv1d\n"
           "[rank0]: something\nbackend: transformers (selective_scan_cuda does not import)\n")
    assert GPU_CHECK.rank_backend(out) == "transformers"
    assert GPU_CHECK.rank_backend("ℹ️  backend mamba_ssm: planned") is None
