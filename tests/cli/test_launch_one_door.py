"""One door to the config: `launch --dry-run` picks what `--auto --dry-run` picks."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner
from fakes import NO_GPU, patch_gpus

from ds_wizard.cli import main

GRID = [(n, mem) for n in (1, 2, 4, 8) for mem in (24, 40, 80, 141)]


def _decision(output: str) -> tuple[str, str] | str:
    """The validated triple and ZeRO stage a dry run printed, or its error line."""
    triple = re.search(r"✅ Config validated: (\d+ = \d+ × \d+ × \d+)", output)
    stage = re.search(r"ZeRO stage: (\d)", output)
    if triple and stage:
        return triple.group(1), stage.group(1)
    return output.strip().splitlines()[-1]


@pytest.mark.parametrize(("num_gpus", "gib"), GRID)
def test_launch_and_auto_agree(num_gpus: int, gib: int, monkeypatch, tmp_path) -> None:
    patch_gpus(monkeypatch, NO_GPU)  # the memory comes from --gpu-memory alone
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    common = ["--preset", "7b_mamba", "--num-gpus", str(num_gpus), "--gpu-memory", f"{gib}GiB",
              "--dry-run"]
    auto = runner.invoke(main, ["--auto", *common])
    launch = runner.invoke(main, ["launch", *common])
    assert (auto.exit_code == 0) == (launch.exit_code == 0), (auto.output, launch.output)
    if auto.exit_code == 0:
        assert _decision(launch.output) == _decision(auto.output)
        assert isinstance(_decision(auto.output), tuple)
    else:  # refused the same way (DoesNotFit), with the same words
        assert "does not fit" in auto.output.lower() or "fit" in auto.output.lower()
        assert _decision(launch.output) == _decision(auto.output)
    assert not (tmp_path / "runs").exists()


def test_launch_fits_the_batch_to_memory(monkeypatch, tmp_path) -> None:
    """The change itself: the preset's 4 × 8 × 4 does not fit 80 GiB GPUs at ZeRO 2 the way
    the memory model sees it, so launch now takes the fitted 2 × 16 × 4, like --auto."""
    patch_gpus(monkeypatch, NO_GPU)
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(main, ["launch", "--preset", "7b_mamba", "--num-gpus", "4",
                                    "--dry-run"]).output
    fitted = CliRunner().invoke(main, ["launch", "--preset", "7b_mamba", "--num-gpus", "4",
                                       "--gpu-memory", "80GiB", "--dry-run"]).output
    assert "128 = 4 × 8 × 4" in out  # no memory known: the preset's batch, as --auto does
    assert "128 = 2 × 16 × 4" in fitted
