"""Issue 15, fault 6, fast: a config that passes `check` must not crash the training loop at
step 1. Launch planning completes it from the preset (and says so) or refuses it with one
line. The real launch on the issue's config is in test_faults_runs.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ds_wizard.cli import main
from ds_wizard.core.check.checker import check_config
from ds_wizard.core.config.completeness import IncompleteConfig, complete_for_training
from ds_wizard.core.config.dsconfig import optimizer_block
from ds_wizard.core.presets.lookup import load_preset
from ds_wizard.core.runs import rundir
from ds_wizard.core.runs.runspec import Accelerator
from ds_wizard.launch import plan as planning
from ds_wizard.launch.plan import LaunchRequest

CPU = Accelerator("cpu", 0, "test: no GPU")
ISSUE_CONFIG = '{"train_micro_batch_size_per_gpu": 4}\n'


@pytest.fixture
def spec():
    return load_preset("tiny_mamba").spec


def test_missing_optimizer_is_supplied_from_the_preset(spec) -> None:
    cfg = json.loads(ISSUE_CONFIG)
    done = complete_for_training(cfg, spec, check_config(cfg, 2))
    assert cfg == {"train_micro_batch_size_per_gpu": 4}  # the input is not modified
    assert done.config["optimizer"] == optimizer_block(spec)
    assert done.config["optimizer"]["params"]["lr"] == spec.train.lr
    assert (done.config["train_batch_size"], done.config["gradient_accumulation_steps"]) \
        == (8, 1)
    assert done.notes[0].startswith("the config has no optimizer block: using the preset's "
                                    "AdamW (lr 0.003, weight decay 0.1)")
    assert "learning rate stays constant" in done.notes[0]


def test_a_complete_config_is_left_as_it_is(spec) -> None:
    cfg = {"train_batch_size": 16, "train_micro_batch_size_per_gpu": 4,
           "gradient_accumulation_steps": 2,
           "optimizer": {"type": "SGD", "params": {"lr": 0.1}},
           "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 5}}}
    done = complete_for_training(cfg, spec, check_config(cfg, 2))
    assert done.config == cfg and done.notes == ()


@pytest.mark.parametrize(("block", "why"), [
    (None, "must be an object"),
    ("AdamW", "must be an object"),
    ({"params": {"lr": 1e-3}}, "has no type"),
    ({"type": "Adamm"}, "'Adamm' is neither a DeepSpeed optimizer nor a torch.optim class"),
    ({"type": "LBFGS"}, "'LBFGS' cannot train this model"),
    ({"type": "AdamW", "params": [1e-3]}, "optimizer.params must be an object"),
])
def test_an_optimizer_the_loop_cannot_use_is_refused(spec, block, why) -> None:
    cfg = {"train_micro_batch_size_per_gpu": 4, "optimizer": block}
    with pytest.raises(IncompleteConfig, match=why):
        complete_for_training(cfg, spec, check_config(cfg, 2))


@pytest.mark.parametrize("kind", ["adamw", "Adam", "Lamb", "SGD", "RMSprop", "Adagrad"])
def test_optimizers_deepspeed_can_build_pass(spec, kind) -> None:
    cfg = {"train_micro_batch_size_per_gpu": 4, "optimizer": {"type": kind}}
    assert complete_for_training(cfg, spec, check_config(cfg, 2)).notes == (
        "batch values DeepSpeed derives written out: train_batch_size 8, "
        "gradient_accumulation_steps 1",)


def test_dry_run_of_the_issue_config_says_what_it_supplies(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(ISSUE_CONFIG)
    result = CliRunner().invoke(main, ["launch", "--preset", "tiny_mamba", "--config",
                                       str(config), "--dry-run", "--runs-dir",
                                       str(tmp_path / "runs")], env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.exit_code == 0, result.output
    assert f"{config}: the config has no optimizer block: using the preset's AdamW" \
        in result.output
    assert config.read_text() == ISSUE_CONFIG
    assert not (tmp_path / "runs").exists()


def test_the_run_gets_the_completed_config_and_the_user_file_stays(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(ISSUE_CONFIG)
    plan = planning.prepare_run(LaunchRequest("tiny_mamba", None, config_path=config,
                                              steps=3, runs_dir=tmp_path, accelerator=CPU))
    written = json.loads((plan.run_dir / rundir.CONFIG_JSON).read_text())
    assert written["optimizer"]["type"] == "AdamW" and written == plan.config
    assert (plan.run.micro_batch, plan.run.grad_accum, plan.run.global_batch) == (4, 1, 8)
    assert any("no optimizer block" in n for n in plan.notes)
    assert config.read_text() == ISSUE_CONFIG


def test_an_unusable_optimizer_is_refused_in_one_line_before_anything_is_made(
    tmp_path: Path,
) -> None:
    config = tmp_path / "c.json"
    config.write_text('{"train_micro_batch_size_per_gpu": 4, "optimizer": {"type": "Nope"}}')
    result = CliRunner().invoke(main, ["launch", "--preset", "tiny_mamba", "--config",
                                       str(config), "--runs-dir", str(tmp_path / "runs")],
                                env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert result.output.startswith("error: the config cannot train: optimizer type 'Nope'")
    assert not (tmp_path / "runs").exists()


def test_the_per_rank_dry_run_does_not_pass_a_config_a_rank_would_stop_on(
    tmp_path: Path,
) -> None:
    import os
    import subprocess
    import sys

    config = tmp_path / "c.json"
    config.write_text(ISSUE_CONFIG)
    proc = subprocess.run([sys.executable, "-m", "ds_wizard.train", "--preset", "tiny_mamba",
                           "--config", str(config), "--dry-run"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"❌ {config} cannot train: it has no optimizer block" in proc.stdout
    assert "Traceback" not in proc.stderr
