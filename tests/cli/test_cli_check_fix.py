"""The source document's scenario end to end through the CLI: check, fix, --auto."""

from __future__ import annotations

import json

import pytest
from fakes import SEED_CONFIG, run_cli, write_seed

from ds_wizard.cli import main


def test_check_seed_is_invalid_with_deepspeeds_numbers(runner, tmp_path):
    cfg = write_seed(tmp_path)
    result = runner.invoke(main, ["check", str(cfg), "--num-gpus", "4"])
    assert result.exit_code == 1
    assert result.output.splitlines()[0].startswith("❌ INVALID")
    assert "16 != 4 * 8 * 4" in result.output
    assert f"ds-wizard fix {cfg} --num-gpus 4 --keep micro  # 128 = 4 × 8 × 4" in result.output


def test_check_json(runner, tmp_path):
    cfg = write_seed(tmp_path)
    result = runner.invoke(main, ["check", str(cfg), "--num-gpus", "4", "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["valid"] is False and data["world_size"] == 4
    assert (data["train_batch_size"], data["train_micro_batch_size_per_gpu"],
            data["gradient_accumulation_steps"]) == (16, 4, 8)
    assert any("16 != 4 * 8 * 4" in e for e in data["errors"])
    assert data["warnings"] == []


def test_check_uses_data_parallel_size(runner, tmp_path):
    cfg = write_seed(tmp_path)
    cfg.write_text(json.dumps({**SEED_CONFIG, "train_batch_size": 128}))
    # 16 GPUs with tensor parallel 4 → 4 data-parallel ranks → 128 = 4 × 8 × 4
    result = runner.invoke(main, ["check", str(cfg), "--num-gpus", "16", "--tp", "4"])
    assert result.exit_code == 0, result.output
    bad = runner.invoke(main, ["check", str(cfg), "--num-gpus", "16", "--tp", "3"])
    assert bad.exit_code == 2  # 16 ranks do not divide by tensor parallel 3


def test_check_without_num_gpus_says_what_it_assumed(runner, tmp_path):
    cfg = write_seed(tmp_path)
    result = runner.invoke(main, ["check", str(cfg)])
    assert result.exit_code == 1
    assert "assumed 1" in result.output and "--num-gpus" in result.output
    assert "16 != 4 * 8 * 1" in result.output


def test_fix_seed_gives_128_keeps_keys_order_backup_and_is_idempotent(runner, tmp_path):
    cfg = write_seed(tmp_path)
    original = cfg.read_bytes()
    result = runner.invoke(main, ["fix", str(cfg), "--num-gpus", "4"])
    assert result.exit_code == 0, result.output
    assert "16 → 128" in result.output and "128 = 4 × 8 × 4" in result.output
    fixed = json.loads(cfg.read_text())
    assert fixed == {**SEED_CONFIG, "train_batch_size": 128}
    assert list(fixed) == list(SEED_CONFIG)
    backup = tmp_path / "deepspeed_config.json.bak"
    assert backup.read_bytes() == original

    after_first = cfg.read_bytes()
    again = runner.invoke(main, ["fix", str(cfg), "--num-gpus", "4"])
    assert again.exit_code == 0
    assert "nothing to fix" in again.output
    assert cfg.read_bytes() == after_first
    assert backup.read_bytes() == original  # the second run did not overwrite the backup

    check = runner.invoke(main, ["check", str(cfg), "--num-gpus", "4"])
    assert check.exit_code == 0 and check.output.startswith("✅ VALID")


@pytest.mark.parametrize(("keep", "triplet", "after", "written"), [
    ("micro", ["train_batch_size                16 → 128",
               "train_micro_batch_size_per_gpu  4  (kept)",
               "gradient_accumulation_steps     8  (kept)"], "128 = 4 × 8 × 4", (128, 4, 8)),
    ("global", ["train_batch_size                16  (kept)",
                "train_micro_batch_size_per_gpu  4",
                "gradient_accumulation_steps     8 → 1"], "16 = 4 × 1 × 4", (16, 4, 1)),
])
def test_fix_shows_each_value_before_and_after_and_both_formulas(runner, tmp_path, keep,
                                                                 triplet, after, written):
    cfg = write_seed(tmp_path)
    result = runner.invoke(main, ["fix", str(cfg), "--num-gpus", "4", "--keep", keep])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"fixing {cfg} for world size 4 (--num-gpus 4), keeping ")
    assert [line.strip() for line in lines[1:4]] == triplet
    # before: our formula, then DeepSpeed's own message for it
    assert lines[4].startswith("before: 16 != 4 × 8 × 4   ✗ DeepSpeed: ")
    assert lines[4].endswith("16 != 4 * 8 * 4")
    assert lines[5] == f"after:  {after}   ✅"
    assert lines[6] == f"wrote {cfg} (previous version: {cfg}.bak)"
    fixed = json.loads(cfg.read_text())
    assert (fixed["train_batch_size"], fixed["train_micro_batch_size_per_gpu"],
            fixed["gradient_accumulation_steps"]) == written


def test_fix_output_leaves_input_alone(runner, tmp_path):
    cfg = write_seed(tmp_path)
    original = cfg.read_bytes()
    out = tmp_path / "deepspeed_4gpu.json"
    result = runner.invoke(main, ["fix", str(cfg), "--num-gpus", "4", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert cfg.read_bytes() == original
    assert json.loads(out.read_text())["train_batch_size"] == 128


def test_fix_keep_global(runner, tmp_path):
    cfg = write_seed(tmp_path)
    cfg.write_text(json.dumps({**SEED_CONFIG, "train_batch_size": 128}))
    result = runner.invoke(main, ["fix", str(cfg), "--num-gpus", "8", "--keep", "global"])
    assert result.exit_code == 0, result.output
    fixed = json.loads(cfg.read_text())
    assert (fixed["train_batch_size"], fixed["train_micro_batch_size_per_gpu"],
            fixed["gradient_accumulation_steps"]) == (128, 4, 4)


def test_fix_dry_run_writes_nothing(runner, tmp_path):
    cfg = write_seed(tmp_path)
    original = cfg.read_bytes()
    result = runner.invoke(main, ["fix", str(cfg), "--num-gpus", "4", "--dry-run"])
    assert result.exit_code == 0 and "not written" in result.output
    assert cfg.read_bytes() == original
    assert not (tmp_path / "deepspeed_config.json.bak").exists()


def test_fix_exits_1_when_other_problems_remain(runner, tmp_path):
    cfg = write_seed(tmp_path)
    cfg.write_text(json.dumps({**SEED_CONFIG, "fp16": {"enabled": True}}))
    result = runner.invoke(main, ["fix", str(cfg), "--num-gpus", "4"])
    assert result.exit_code == 1
    assert json.loads(cfg.read_text())["train_batch_size"] == 128
    assert "both enabled" in result.output


def test_seed_scenario_as_real_processes(tmp_path):
    cfg = write_seed(tmp_path)
    check = run_cli("check", cfg.name, "--num-gpus", "4", cwd=tmp_path)
    assert check.returncode == 1 and "16 != 4 * 8 * 4" in check.stdout
    fix = run_cli("fix", cfg.name, "--num-gpus", "4", cwd=tmp_path)
    assert fix.returncode == 0 and json.loads(cfg.read_text())["train_batch_size"] == 128
    auto = run_cli("--auto", "--num-gpus", "4", "--preset", "7b_mamba", "--dry-run",
                   cwd=tmp_path)
    assert auto.returncode == 0, auto.stderr
    assert "✅ Config validated: 128 = 4 × 8 × 4" in auto.stdout
    assert "✅ Batch size validated: 128 = 4 × 8 × 4" in auto.stdout
    for proc in (check, fix, auto):
        assert "Traceback" not in proc.stdout + proc.stderr


def test_check_json_reports_unreadable_files_as_json(runner, tmp_path):
    cfg = tmp_path / "broken.json"
    cfg.write_text("{")
    result = runner.invoke(main, ["check", str(cfg), "--num-gpus", "4", "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["valid"] is False and "JSON fails at line 1:2" in data["errors"][0]
    assert result.stderr.startswith("error: ")


def test_hf_auto_precision_is_not_reported_as_both_enabled(runner, tmp_path):
    cfg = tmp_path / "hf.json"
    cfg.write_text(json.dumps({**SEED_CONFIG, "train_batch_size": 128,
                               "fp16": {"enabled": "auto"}, "bf16": {"enabled": "auto"}}))
    result = runner.invoke(main, ["check", str(cfg), "--num-gpus", "4", "--json"])
    data = json.loads(result.stdout)
    # DeepSpeed drops both "auto"s and uses its default (off): valid, with warnings
    assert result.exit_code == 0, data
    assert any("fp16.enabled" in w and "default" in w for w in data["warnings"])
    assert any("bf16.enabled" in w and "default" in w for w in data["warnings"])
    assert not any("both enabled" in e for e in data["errors"])
    strict = runner.invoke(main, ["check", str(cfg), "--num-gpus", "4", "--strict"])
    assert strict.exit_code == 1


def test_json_is_utf8_not_escaped(runner, tmp_path):
    cfg = write_seed(tmp_path)
    for argv in (["check", str(cfg), "--num-gpus", "4", "--json"],
                 ["fix", str(cfg), "--num-gpus", "4", "--json", "--dry-run"]):
        result = runner.invoke(main, argv)
        assert "×" in result.stdout and "\\u00d7" not in result.stdout, result.stdout
        json.loads(result.stdout)


@pytest.mark.parametrize("raw", ['{"train_batch_size": NaN, "train_micro_batch_size_per_gpu": 4}',
                                 '{"train_batch_size": 16, "gradient_clipping": Infinity}',
                                 '{\n // hjson\n "train_batch_size": 16,\n "fp16": {"loss_scale": '
                                 '1e999},\n}'])
def test_nan_and_infinity_are_errors_and_never_written_back(runner, tmp_path, raw):
    cfg = tmp_path / "ds.json"
    cfg.write_text(raw)
    check = runner.invoke(main, ["check", str(cfg), "--num-gpus", "4"])
    assert check.exit_code == 1 and "not a number" in check.stderr
    fixed = runner.invoke(main, ["fix", str(cfg), "--num-gpus", "4"])
    assert fixed.exit_code == 1
    assert cfg.read_text() == raw and not (tmp_path / "ds.json.bak").exists()


def test_check_deep_runs_deepspeeds_own_parser(runner, tmp_path):
    cfg = write_seed(tmp_path)
    bad = runner.invoke(main, ["check", str(cfg), "--num-gpus", "4", "--deep", "--json"])
    data = json.loads(bad.stdout)
    assert bad.exit_code == 1
    assert data["deep"]["accepted"] is False and "16 != 4 * 8 * 4" in data["deep"]["message"]
    cfg.write_text(json.dumps({**SEED_CONFIG, "train_batch_size": 128}))
    good = runner.invoke(main, ["check", str(cfg), "--num-gpus", "4", "--deep"])
    assert good.exit_code == 0, good.output
    assert "deep check: DeepSpeed" in good.output and "accepts it at world size 4" in good.output


def test_sp_flag_and_config_key_must_agree(runner, tmp_path):
    cfg = tmp_path / "ds.json"
    cfg.write_text(json.dumps({"train_batch_size": 16, "train_micro_batch_size_per_gpu": 4,
                               "gradient_accumulation_steps": 1, "sequence_parallel_size": 2}))
    assert runner.invoke(main, ["check", str(cfg), "--num-gpus", "8"]).exit_code == 0
    assert runner.invoke(main, ["check", str(cfg), "--num-gpus", "8", "--sp", "2"]).exit_code == 0
    clash = runner.invoke(main, ["check", str(cfg), "--num-gpus", "8", "--sp", "4"])
    assert clash.exit_code == 1 and "make them agree" in clash.output


def test_warnings_do_not_change_the_exit_code_unless_strict(runner, tmp_path):
    cfg = tmp_path / "ds.json"
    cfg.write_text(json.dumps({**SEED_CONFIG, "train_batch_size": 128,
                               "imagenet_args": {"arch": "resnet"}}))
    loose = runner.invoke(main, ["check", str(cfg), "--num-gpus", "4"])
    assert loose.exit_code == 0 and "DeepSpeed ignores it" in loose.output
    strict = runner.invoke(main, ["check", str(cfg), "--num-gpus", "4", "--strict"])
    assert strict.exit_code == 1


def test_deep_verdict_is_final_where_the_schema_disagrees():
    from types import SimpleNamespace

    from ds_wizard.core.check.checker import check_config
    from ds_wizard.core.config.filecheck import _defer_to_deepspeed

    cfg = {**SEED_CONFIG, "train_batch_size": 128, "zero_optimization": {"stage": 9}}
    report = check_config(cfg, 4)
    assert not report.valid
    accepted = SimpleNamespace(accepted=True, error_type=None, message=None)
    _defer_to_deepspeed(report, accepted, hf_error=False)
    assert report.valid and report.errors == []
    assert any("DeepSpeed accepts it" in w for w in report.warnings)
    ok = check_config({**SEED_CONFIG, "train_batch_size": 128}, 4)
    refused = SimpleNamespace(accepted=False, error_type="ValueError", message="no")
    _defer_to_deepspeed(ok, refused, hf_error=False)
    assert not ok.valid and ok.deepspeed_error == "ValueError: no"


def test_fix_json_when_nothing_can_be_fixed(runner, tmp_path):
    cfg = tmp_path / "ds.json"
    cfg.write_text(json.dumps({"train_batch_size": "auto",
                               "train_micro_batch_size_per_gpu": "auto"}))
    result = runner.invoke(main, ["fix", str(cfg), "--num-gpus", "4", "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["valid"] is False and data["written"] is None and "--hf" in data["errors"][0]
    fixed = tmp_path / "ok.json"
    fixed.write_text(json.dumps({**SEED_CONFIG}))
    ok = runner.invoke(main, ["fix", str(fixed), "--num-gpus", "4", "--json"])
    data = json.loads(ok.stdout)
    assert ok.exit_code == 0 and data["valid"] is True and data["deep"]["accepted"] is True
    assert data["changes"] == {"train_batch_size": [16, 128]} and data["written"] == str(fixed)
