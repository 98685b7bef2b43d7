"""Issue 22: trackers as DeepSpeed's own monitor keys, and what `check` says about them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _ds_oracle import deepspeed_verdict

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.check.checker import check_config
from ds_wizard.core.config.auto import auto_configure
from ds_wizard.core.config.monitor import (
    parse_trackers,
    place_trackers,
    tracker_dirs,
    view_commands,
    wandb_env,
    with_trackers,
)
from ds_wizard.core.presets.lookup import load_preset
from ds_wizard.core.presets.overrides import load_with_overrides

BASE = {"train_batch_size": 8, "train_micro_batch_size_per_gpu": 4,
        "gradient_accumulation_steps": 1}


def test_monitor_flag_parses_names_and_refuses_others() -> None:
    assert parse_trackers("tensorboard, CSV,tensorboard") == ("tensorboard", "csv")
    assert parse_trackers("none") == ()
    with pytest.raises(DsWizardError, match="unknown tracker 'tensorbaord'"):
        parse_trackers("tensorbaord")


def test_preset_monitor_section_builds_deepspeeds_blocks_and_deepspeed_accepts_them() -> None:
    preset = load_with_overrides("tiny_mamba", ['monitor.trackers=["tensorboard", "csv"]'])
    cfg = auto_configure(preset, 2, device="cpu").config
    assert cfg["tensorboard"] == {"enabled": True, "output_path": "", "job_name": "ds-wizard"}
    assert cfg["csv_monitor"]["enabled"] is True and "wandb" not in cfg
    assert deepspeed_verdict(cfg, 2).valid
    assert check_config(cfg, 2).valid
    assert "tensorboard" not in auto_configure(load_preset("tiny_mamba"), 2, device="cpu").config


def test_preset_refuses_an_unknown_tracker_with_the_field_path() -> None:
    with pytest.raises(DsWizardError, match=r"monitor\.trackers"):
        load_with_overrides("tiny_mamba", ['monitor.trackers=["tensorbaord"]'])


@pytest.mark.parametrize(("block", "typo"), [("tensorboard", "output_pth"),
                                             ("csv_monitor", "jobname"), ("wandb", "projct")])
def test_check_refuses_a_misspelled_monitor_key_as_deepspeed_does(block: str, typo: str) -> None:
    from pydantic import ValidationError

    cfg = {**BASE, block: {"enabled": True, typo: "x"}}
    report = check_config(cfg, 2)
    assert not report.valid
    assert any(f"{block}.{typo}" in e for e in report.errors)
    # DeepSpeedConfig itself refuses the same key (its models forbid extra keys)
    with pytest.raises(ValidationError, match=typo):
        deepspeed_verdict(cfg, 2)
    good = with_trackers(BASE, ("tensorboard", "csv", "wandb"), job_name="j")
    assert deepspeed_verdict(good, 2).valid and check_config(good, 2).valid


def test_check_refuses_an_output_path_rank_0_cannot_create(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cfg = {**BASE, "csv_monitor": {"enabled": True, "output_path": str(blocker / "logs"),
                                   "job_name": "run"}}
    report = check_config(cfg, 2)
    assert not report.valid
    assert f"{blocker} is a file, not a directory" in report.errors[0]
    assert report.deepspeed_error is None  # DeepSpeed itself would only fail in rank 0
    off = {**cfg, "csv_monitor": {**cfg["csv_monitor"], "enabled": False}}
    assert check_config(off, 2).valid


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory")
def test_check_refuses_a_read_only_directory(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    cfg = {**BASE, "tensorboard": {"enabled": True, "output_path": str(ro), "job_name": "r"}}
    assert "is not writable" in check_config(cfg, 2).errors[0]


def test_launch_places_files_under_the_run_directory_named_after_the_run(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "tiny_mamba-20261208-011103"
    cfg = with_trackers(BASE, ("tensorboard", "csv", "wandb"), job_name="ds-wizard")
    placed, notes = place_trackers(cfg, run)
    assert placed["tensorboard"] == {"enabled": True, "output_path": str(run / "tensorboard"),
                                     "job_name": run.name}
    assert placed["csv_monitor"]["output_path"] == str(run / "csv")
    assert placed["wandb"]["group"] == "ds-wizard" and notes == []
    assert tracker_dirs(placed, run) == {"tensorboard": str(run / "tensorboard" / run.name),
                                         "csv": str(run / "csv" / run.name),
                                         "wandb": str(run / "wandb")}
    assert f"tensorboard --logdir {run / 'tensorboard'}" in view_commands(placed)
    mine = {**BASE, "tensorboard": {"enabled": True, "output_path": "/elsewhere"}}
    kept, notes = place_trackers(mine, run)
    assert kept["tensorboard"]["output_path"] == "/elsewhere" and "/elsewhere" in notes[0]


def test_wandb_is_offline_in_the_run_directory_unless_the_user_says_otherwise() -> None:
    run = Path("/r/x")
    assert wandb_env(run, {}) == {"WANDB_NAME": "x", "WANDB_MODE": "offline",
                                  "WANDB_DIR": "/r/x/wandb"}
    assert "WANDB_MODE" not in wandb_env(run, {"WANDB_API_KEY": "k"})
    assert wandb_env(run, {"WANDB_MODE": "online", "WANDB_DIR": "/w"}) == {"WANDB_NAME": "x"}
