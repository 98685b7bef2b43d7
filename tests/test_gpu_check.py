"""benchmarks/gpu_check.py --self-test: the one-shot GPU check's CPU-possible phases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_self_test_passes_and_writes_its_results(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"),
                           "--self-test", "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    phases = json.loads((tmp_path / "gpu_check.json").read_text())["phases"]
    assert [p["status"] for p in phases] == ["ok", "ok"]
    detect = phases[0]
    assert all(detect["checks"].values()) and len(detect["checks"]) == 6
    assert detect["skipped"] == ["GPU 1 (NVML index): Insufficient Permissions"]
    assert "| 1. NVML detection" in (tmp_path / "gpu_check.md").read_text()


def test_gpu_check_stages_no_wheels_in_git() -> None:
    tracked = subprocess.run(["git", "ls-files", "*.whl", ".gpucheck"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    assert tracked == ""
