"""Shared bits for the headless-CLI tests: the seed config and a machine with no GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ds_wizard.core.gpus import GpuInfo, GpuReport

SEED_CONFIG = {
    "train_batch_size": 16,
    "train_micro_batch_size_per_gpu": 4,
    "gradient_accumulation_steps": 8,
    "gradient_clipping": 1.0,
    "zero_optimization": {"stage": 2, "overlap_comm": True},
    "bf16": {"enabled": True},
    "optimizer": {"type": "AdamW", "params": {"lr": 0.0006}},
}
NO_GPU = GpuReport(reason="no NVIDIA driver or GPU found (test)")
FOUR_A100 = GpuReport(
    [GpuInfo(i, i, "NVIDIA A100-SXM4-80GB", 80 * 2**30, (8, 0), f"GPU-{i}") for i in range(4)],
    driver_version="550.54",
)
TWO_V100 = GpuReport(
    [GpuInfo(i, i, "Tesla V100-SXM2-32GB", 32 * 2**30, (7, 0), f"GPU-{i}") for i in range(2)],
    driver_version="535.00",
)


def write_seed(directory: Path, name: str = "deepspeed_config.json") -> Path:
    path = directory / name
    path.write_text(json.dumps(SEED_CONFIG, indent=4) + "\n", encoding="utf-8")
    return path


def fake_gpus(monkeypatch: pytest.MonkeyPatch, report: GpuReport,
              kernels: bool = True) -> None:
    """Every detect_gpus the CLI can reach returns ``report``.

    ``kernels``: whether mamba-ssm's kernels count as installed, as on a GPU machine set
    up with the [gpu] extra; the backend the planner assumes for "auto" depends on it.
    """
    import ds_wizard.commands.gpus
    import ds_wizard.core.gpus
    import ds_wizard.core.runspec

    monkeypatch.setattr(ds_wizard.core.runspec, "_module_found", lambda m: kernels)
    monkeypatch.setattr(ds_wizard.core.gpus, "detect_gpus", lambda *a, **k: report)
    monkeypatch.setattr(ds_wizard.commands.gpus, "detect_gpus", lambda *a, **k: report)


def run_cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real console entry point in a fresh interpreter (exit codes, no traceback)."""
    full_env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "ds_wizard.cli", *args], cwd=cwd, env=full_env,
        capture_output=True, text=True, timeout=120,
    )
