"""auto_configure, the summary text, and ``ds-wizard --auto``."""

from __future__ import annotations

import json

import pytest
from _ds_oracle import deepspeed_verdict
from click.testing import CliRunner
from fakes import FOUR_A100, TWO_V100, patch_gpus

from ds_wizard.cli import main
from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.config.auto import auto_configure
from ds_wizard.core.config.summary import summary_lines
from ds_wizard.core.presets.lookup import load_preset
from ds_wizard.core.presets.overrides import load_with_overrides

SEED_SUMMARY = [
    "✅ Config validated: 128 = 4 × 8 × 4",
    "",
    "📊 DeepSpeed training configuration:",
    "Model type: mamba",
    "Estimated parameters: 6.95B (6,945,935,360)",
    "GPUs: 4",
    "Batch size per GPU: 4",
    "Gradient accumulation: 8",
    "Effective batch size: 128",
    "ZeRO stage: 2",
    "",
    "✅ Batch size validated: 128 = 4 × 8 × 4",
]


@pytest.fixture(scope="module")
def seven_b():
    return load_preset("7b_mamba")


def test_seed_summary(seven_b):
    result = auto_configure(seven_b, 4)
    assert result.choice.formula == "128 = 4 × 8 × 4"
    assert result.summary() == SEED_SUMMARY


def test_summary_for_train_dry_run_and_invalid_configs():
    cfg = {"train_batch_size": 16, "train_micro_batch_size_per_gpu": 4,
           "gradient_accumulation_steps": 8, "zero_optimization": {"stage": 2}}
    lines = summary_lines({**cfg, "train_batch_size": 128}, 4, model_type="mamba",
                          params=6_945_935_360, config_source="deepspeed_4gpu.json",
                          dry_run=True)
    assert lines[0] == "✅ Using pre-built config: deepspeed_4gpu.json"
    assert lines[-1] == "✅ Config validation complete (dry_run mode)"
    bad = summary_lines(cfg, 4, model_type="mamba", params=1)
    assert bad[0].startswith("❌ Config invalid:") and bad[0].endswith("16 != 4 * 8 * 4")


@pytest.mark.parametrize(("gpus", "expected"), [(1, (2, 16, 32)), (2, (2, 16, 64)),
                                                  (4, (4, 8, 128)), (8, (4, 4, 128))])
def test_seed_table_numbers(seven_b, gpus, expected):
    c = auto_configure(seven_b, gpus).choice
    assert (c.micro_batch, c.grad_accum, c.global_batch) == expected


def test_precision_follows_detected_gpus(seven_b):
    assert "bf16" in auto_configure(seven_b, 4, gpu_report=FOUR_A100).config
    v100 = auto_configure(seven_b, 2, gpu_report=TWO_V100)
    assert "fp16" in v100.config and "bf16" not in v100.config
    assert any("predates Ampere" in r for r in v100.reasons)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"micro_batch": 2}, (2, 16, 128)),
        ({"micro_batch": 2, "grad_accum": 4}, (2, 4, 32)),
        ({"global_batch": 256}, (4, 16, 256)),
        ({"global_batch": 64, "grad_accum": 8}, (2, 8, 64)),
        ({"grad_accum": 2}, (4, 2, 32)),
    ],
)
def test_explicit_batch_values(seven_b, kwargs, expected):
    result = auto_configure(seven_b, 4, **kwargs)
    c = result.choice
    assert (c.micro_batch, c.grad_accum, c.global_batch) == expected
    assert deepspeed_verdict(result.config, 4).valid


def test_a_zero_stage_that_cannot_carry_the_presets_offload_is_refused():
    offloading = load_with_overrides("7b_mamba", ["deepspeed.offload_optimizer=cpu"])
    with pytest.raises(DsWizardError,
                       match=r"optimizer offload \(offload_optimizer\) needs ZeRO stage 1, 2 or 3"):
        auto_configure(offloading, 4, zero_stage=0)
    zero = auto_configure(offloading, 4, zero_stage=3).config["zero_optimization"]
    assert (zero["stage"], zero["offload_optimizer"]["device"]) == (3, "cpu")


def test_impossible_global_batch_names_neighbours(seven_b):
    with pytest.raises(DsWizardError) as info:
        auto_configure(seven_b, 8, global_batch=100)
    assert "96" in info.value.one_line() and "104" in info.value.one_line()


def test_auto_dry_run_prints_the_seed_summary(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(main, ["--auto", "--num-gpus", "4", "--preset", "7b_mamba",
                                  "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "\n".join(SEED_SUMMARY) in result.output
    assert list(tmp_path.iterdir()) == []


def test_auto_writes_atomically_with_backup(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "deepspeed_config.json").write_text('{"train_batch_size": 16}')
    result = runner.invoke(main, ["--auto", "--num-gpus", "4"])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "deepspeed_config.json").read_text())
    assert written["train_batch_size"] == 128
    assert (tmp_path / "deepspeed_config.json.bak").read_text() == '{"train_batch_size": 16}'
    assert deepspeed_verdict(written, 4).valid


def test_auto_json(runner, tmp_path):
    out = tmp_path / "ds.json"
    result = runner.invoke(main, ["--auto", "--num-gpus", "8", "--json", "-o", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["valid"] is True and data["params"] == 6_945_935_360
    assert data["formula"] == "128 = 4 × 4 × 8" and data["output"] == str(out)
    assert json.loads(out.read_text()) == data["config"]


def test_auto_without_gpus_and_without_num_gpus_fails_plainly(runner):
    result = runner.invoke(main, ["--auto", "--dry-run"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no GPU detected")
    assert "--num-gpus" in result.stderr


def test_auto_uses_the_detected_gpu_count(monkeypatch):
    patch_gpus(monkeypatch, FOUR_A100)
    result = CliRunner().invoke(main, ["--auto", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "4 GPU(s) detected" in result.output and "GPUs: 4" in result.output
    # the batch itself may be fitted to the detected memory; it must still be valid on 4
    assert "✅ Config validated: " in result.output
    assert result.output.split("✅ Config validated: ")[1].split("\n")[0].endswith("× 4")


def test_auto_set_override_and_usage_errors(runner):
    result = runner.invoke(main, ["--auto", "--num-gpus", "4", "--dry-run",
                                  "--set", "deepspeed.zero_stage=3"])
    assert result.exit_code == 0 and "ZeRO stage: 3" in result.output
    assert runner.invoke(main, ["--num-gpus", "4"]).exit_code == 2  # needs --auto
    assert runner.invoke(main, ["--auto", "--num-gpus", "0"]).exit_code == 2
    assert runner.invoke(main, ["--auto", "gpus"]).exit_code == 2
    unknown = runner.invoke(main, ["--auto", "--num-gpus", "4", "--preset", "nope"])
    assert unknown.exit_code == 1 and unknown.stderr.startswith("error: ")


def test_auto_rerun_leaves_an_identical_file_and_its_backup_alone(runner, tmp_path):
    out = tmp_path / "ds.json"
    out.write_text("{}")
    assert runner.invoke(main, ["--auto", "--num-gpus", "4", "-o", str(out)]).exit_code == 0
    written = out.read_bytes()
    again = runner.invoke(main, ["--auto", "--num-gpus", "4", "-o", str(out)])
    assert again.exit_code == 0 and "left as it is" in again.output
    assert out.read_bytes() == written
    assert (tmp_path / "ds.json.bak").read_text() == "{}"
