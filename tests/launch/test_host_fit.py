"""CPU ranks are checked against host RAM with the memory model before a launch."""

from __future__ import annotations

from pathlib import Path

import pytest

from ds_wizard.core.presets.lookup import load_preset
from ds_wizard.core.runs.runspec import Accelerator
from ds_wizard.launch.host_fit import (
    GiB,
    HostMemoryRefused,
    check_cpu_ranks,
    cpu_ranks_need,
)
from ds_wizard.launch.plan import LaunchRequest, prepare_run, resolve_config


def _cpu_config(name: str, ranks: int = 2) -> tuple[dict, object]:
    preset = load_preset(name)
    cfg, _ = resolve_config(preset, ranks, Accelerator("cpu", 0, "test"))
    return cfg, preset.spec


def test_tiny_fits_a_laptop_and_7b_does_not() -> None:
    cfg, spec = _cpu_config("tiny_mamba")
    check_cpu_ranks(cfg, spec, 2, "tiny_mamba", available=8 * GiB)
    cfg, spec = _cpu_config("7b_mamba")
    with pytest.raises(HostMemoryRefused) as err:
        check_cpu_ranks(cfg, spec, 2, "7b_mamba", available=64 * GiB)
    assert "2 CPU rank(s) of 7b_mamba need about" in err.value.one_line()
    assert "64.0 GiB is available" in err.value.one_line()


def test_more_ranks_need_more() -> None:
    cfg2, spec = _cpu_config("tiny_mamba", 2)
    cfg4, _ = _cpu_config("tiny_mamba", 4)
    assert cpu_ranks_need(cfg4, spec, 4) > cpu_ranks_need(cfg2, spec, 2)


def test_launch_refuses_7b_on_cpu_ranks_before_starting(tmp_path: Path) -> None:
    with pytest.raises(HostMemoryRefused):
        prepare_run(LaunchRequest("7b_mamba", 2, runs_dir=tmp_path / "runs",
                                  accelerator=Accelerator("cpu", 0, "test")))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
