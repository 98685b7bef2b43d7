"""core.checker: the verdict, the extra problems, and the repair."""

from __future__ import annotations

import pytest
from _ds_oracle import deepspeed_verdict

from ds_wizard.core.base.errors import ConfigFileError, DsWizardError
from ds_wizard.core.check.checker import check_config, fix_config, parse_config_bytes

SEED = {
    "train_batch_size": 16,
    "train_micro_batch_size_per_gpu": 4,
    "gradient_accumulation_steps": 8,
    "zero_optimization": {"stage": 2},
    "bf16": {"enabled": True},
}


def test_seed_is_invalid_with_deepspeeds_message():
    report = check_config(SEED, 4)
    assert not report.valid
    assert report.deepspeed_error.endswith("16 != 4 * 8 * 4")
    assert report.formula == "16 != 4 × 8 × 4"
    assert any(s.startswith("--keep micro  # 128 = 4 × 8 × 4") for s in report.suggestions)


def test_valid_config_has_no_errors():
    report = check_config({**SEED, "train_batch_size": 128}, 4)
    assert report.valid and report.errors == [] and report.formula == "128 = 4 × 8 × 4"
    data = report.to_dict()
    for key in ("valid", "world_size", "train_batch_size", "train_micro_batch_size_per_gpu",
                "gradient_accumulation_steps", "errors", "warnings"):
        assert key in data


def test_derived_values_are_reported():
    report = check_config({"train_batch_size": 128, "train_micro_batch_size_per_gpu": 4}, 4)
    assert report.valid and report.gradient_accumulation_steps == 8
    assert report.derived == ["gradient_accumulation_steps"]


@pytest.mark.parametrize(
    ("cfg", "needle"),
    [
        ({"train_batch_size": "auto", "train_micro_batch_size_per_gpu": 4}, "Hugging Face"),
        ({"train_batch_size": 128, "train_micro_batch_size_per_gpu": 4,
          "gradient_accumulation_steps": "8"}, 'the string "8"'),
        ({"train_batch_size": True}, "whole number"),
        ({"train_micro_batch_size_per_gpu": -4, "gradient_accumulation_steps": 8},
         "at least 1"),
        ({**SEED, "train_batch_size": 128, "fp16": {"enabled": True}}, "both enabled"),
        ({**SEED, "train_batch_size": 128, "zero_optimization": {"stage": 4}},
         'needs one of 0, 1, 2, 3'),
        ({**SEED, "train_batch_size": 128, "elasticity": {"enabled": True}}, "removed"),
        ({**SEED, "train_batch_size": 128, "fp16": {"enabled": "yes"}}, "both enabled"),
        ({**SEED, "train_batch_size": 128,
          "zero_optimization": {"stage": 2, "overlapp_comm": True}}, "did you mean 'overlap_comm'"),
        ({**SEED, "train_batch_size": 128,
          "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "CPU"}}}, '"CPU"'),
        ({**SEED, "train_batch_size": 128, "fp16": {"enabled": False, "auto_scale": True}},
         "unknown key fp16.auto_scale"),
        ({**SEED, "train_batch_size": 128,
          "zero_optimization": {"stage": 3, "mics_shard_size": 8}}, "removed"),
    ],
    ids=["auto", "string", "bool", "negative", "fp16+bf16", "stage4", "removed",
         "fp16-yes", "zero-typo", "wrong-case", "fp16-unknown", "removed-zero-key"],
)
def test_problems_are_errors(cfg, needle):
    report = check_config(cfg, 4)
    assert not report.valid
    assert any(needle in e for e in report.errors), report.errors


@pytest.mark.parametrize(
    ("cfg", "needle"),
    [
        ({"train_batch_size": 128.0, "train_micro_batch_size_per_gpu": 4}, "float"),
        ({"train_batch_size": 10**12, "train_micro_batch_size_per_gpu": 4}, "implausibly"),
        ({**SEED, "train_batch_size": 128, "train_batch_sizee": 128},
         "did you mean 'train_batch_size'"),
        ({**SEED, "train_batch_size": 128,
          "optimizer": {"type": "AdamW", "params": {"lr": "auto"}}}, "optimizer.params.lr"),
        ({**SEED, "train_batch_size": 128, "zero_optimization": {"stage": "auto"}},
         "uses its default (0)"),
        ({**SEED, "train_batch_size": 128, "flops_profiler": {"enabled": True, "profile_stp": 5}},
         "did you mean 'profile_step'"),
        ({**SEED, "train_batch_size": 128, "aio": {"thread_count": 2}},
         "unknown key aio.thread_count"),
    ],
    ids=["float", "huge", "typo", "auto-nested", "auto-stage", "flops-typo", "aio-old-key"],
)
def test_what_deepspeed_accepts_is_a_warning_unless_strict(cfg, needle):
    report = check_config(cfg, 4)
    assert report.valid and not report.errors
    assert any(needle in w for w in report.warnings), report.warnings
    assert not check_config(cfg, 4, strict=True).valid


@pytest.mark.parametrize("stage", ["3", 3.0, True, "2"])
def test_zero_stage_spellings_deepspeed_reads_are_accepted(stage):
    assert check_config({**SEED, "train_batch_size": 128,
                         "zero_optimization": {"stage": stage}}, 4).valid


def test_legacy_zero_optimization_true_is_accepted_with_a_warning():
    report = check_config({**SEED, "train_batch_size": 128, "zero_optimization": True}, 4)
    assert report.valid and any("legacy" in w for w in report.warnings)


@pytest.mark.parametrize(("sp_key", "sp_flag", "valid"), [
    (2, None, True), (2, 2, True), (2, 4, False), (None, 2, True), (4, None, False)])
def test_sequence_parallel_size_divides_the_world_like_deepspeed(sp_key, sp_flag, valid):
    # 8 ranks, sequence parallel 2: data-parallel 4, so 4 × 4 × 1 = 16
    cfg = {"train_batch_size": 16, "train_micro_batch_size_per_gpu": 4,
           "gradient_accumulation_steps": 1}
    if sp_key is not None:
        cfg["sequence_parallel_size"] = sp_key
    report = check_config(cfg, 8, sequence_parallel=sp_flag)
    assert report.valid is valid, report.errors


def test_first_deepspeed_error_is_the_one_deepspeed_raises_first():
    # a ZeRO block error comes before the batch in DeepSpeedConfig.__init__
    cfg = {"train_batch_size": "16", "train_micro_batch_size_per_gpu": 0,
           "gradient_accumulation_steps": 1, "zero_optimization": {"stage": 9}}
    assert check_config(cfg, 4).deepspeed_error.startswith("ValidationError: zero_optimization")
    # "16" > 0 is where DeepSpeed fails: a TypeError, and nothing earlier
    cfg = {"train_batch_size": "16", "train_micro_batch_size_per_gpu": 0,
           "gradient_accumulation_steps": 1}
    assert check_config(cfg, 4).deepspeed_error.startswith("TypeError: '>' not supported")
    # a non-positive number is checked before the string is ever compared
    cfg = {"train_batch_size": 0, "train_micro_batch_size_per_gpu": "4",
           "gradient_accumulation_steps": 1}
    assert check_config(cfg, 4).deepspeed_error.startswith("AssertionError: Train batch size")


@pytest.mark.parametrize(("cfg", "headline"), [
    (SEED, "16 != 4 × 8 × 4"),
    ({**SEED, "train_batch_size": 128}, "128 = 4 × 8 × 4"),
    ({**SEED, "train_batch_size": 128, "train_micro_batch_size_per_gpu": -4},
     "train_micro_batch_size_per_gpu is -4; it must be at least 1"),
    ({**SEED, "train_batch_size": 128, "train_micro_batch_size_per_gpu": 4.5},
     "train_micro_batch_size_per_gpu is 4.5; it must be a whole number of samples"),
    ({**SEED, "train_batch_size": 128, "fp16": {"enabled": True}}, "fp16 and bf16 are both"),
], ids=["mismatch", "valid", "negative", "float", "fp16+bf16"])
def test_headline_names_the_cause(cfg, headline):
    report = check_config(cfg, 4)
    assert report.headline.startswith(headline), report.headline
    assert "\n" not in report.headline


def test_a_bad_value_comes_before_deepspeeds_verdict_on_it():
    report = check_config({**SEED, "train_batch_size": 128,
                           "train_micro_batch_size_per_gpu": -4}, 4)
    assert report.errors[0] == "train_micro_batch_size_per_gpu is -4; it must be at least 1"
    assert report.errors[1] == ("DeepSpeed would stop with AssertionError: Micro batch size "
                                "per gpu: -4 has to be greater than 0")


def test_native_auto_is_not_flagged():
    cfg = {**SEED, "train_batch_size": 128, "data_types": {"keep_in_fp32_modules": "auto"}}
    assert check_config(cfg, 4).valid


@pytest.mark.parametrize(
    ("scheduler", "needle"),
    [
        ({"type": "WarmupCosineLR", "params": {"warmup_num_steps": 100}}, "total_num_steps"),
        ({"type": "WarmupDecayLR", "params": {"total_num_steps": 10, "warmup_num_steps": 100}},
         "longer than the whole run"),
        ({"type": "WarmupLR", "params": {"warmup_min_lr": 1e-3, "warmup_max_lr": 1e-4}},
         "above warmup_max_lr"),
        ({"type": "WarmupCosinLR", "params": {}}, "did you mean 'WarmupCosineLR'"),
    ],
    ids=["no-total", "warmup-too-long", "min-above-max", "typo"],
)
def test_scheduler_warnings(scheduler, needle):
    report = check_config({**SEED, "train_batch_size": 128, "scheduler": scheduler}, 4)
    assert report.valid  # warnings do not make a config invalid
    assert any(needle in w for w in report.warnings), report.warnings


def test_fix_keep_micro_seed_case_keeps_other_keys_and_order():
    cfg = {"zero_optimization": {"stage": 2}, **SEED, "steps_per_print": 10}
    new, before, after = fix_config(cfg, 4, keep="micro")
    assert new["train_batch_size"] == 128
    assert list(new) == list(cfg)
    assert {k: v for k, v in new.items() if k != "train_batch_size"} == {
        k: v for k, v in cfg.items() if k != "train_batch_size"}
    assert not before.valid and after.valid and after.formula == "128 = 4 × 8 × 4"
    assert cfg["train_batch_size"] == 16  # the input is not mutated


def test_fix_is_idempotent():
    once, _, _ = fix_config(SEED, 4)
    twice, before, after = fix_config(once, 4)
    assert twice == once and before == after


@pytest.mark.parametrize(
    ("cfg", "ws", "expected"),
    [
        ({"train_batch_size": 128, "train_micro_batch_size_per_gpu": 4,
          "gradient_accumulation_steps": 8}, 8, (128, 4, 4)),
        ({"train_batch_size": 128, "train_micro_batch_size_per_gpu": 3}, 8, (128, 2, 8)),
        ({"train_batch_size": 64}, 16, None),  # valid already: 64 // 16 = 4, gas 1
        ({"train_batch_size": 96, "gradient_accumulation_steps": 5}, 8, (96, 12, 1)),
    ],
)
def test_fix_keep_global(cfg, ws, expected):
    new, _, after = fix_config(cfg, ws, keep="global")
    if expected is None:
        assert new == cfg
    else:
        assert (after.train_batch_size, after.micro_batch, after.grad_accum) == expected
    assert deepspeed_verdict(new, ws).valid


def test_fix_keep_global_indivisible_proposes_neighbours():
    with pytest.raises(DsWizardError) as info:
        fix_config({"train_batch_size": 100, "train_micro_batch_size_per_gpu": 4}, 8,
                   keep="global")
    assert "96" in info.value.one_line() and "104" in info.value.one_line()


def test_fix_converts_strings_and_fills_missing_keys_next_to_the_others():
    cfg = {"fp16": {"enabled": True}, "train_micro_batch_size_per_gpu": "4", "optimizer": {}}
    new, _, after = fix_config(cfg, 2)
    assert list(new) == ["fp16", "train_micro_batch_size_per_gpu", "train_batch_size",
                         "gradient_accumulation_steps", "optimizer"]
    assert after.formula == "8 = 4 × 1 × 2"
    assert deepspeed_verdict(new, 2).valid


def test_fix_refuses_auto_micro():
    with pytest.raises(DsWizardError) as info:
        fix_config({"train_batch_size": 16, "train_micro_batch_size_per_gpu": "auto"}, 4)
    assert "--keep global" in info.value.one_line()


def test_fixed_configs_pass_deepspeed():
    for keep in ("micro", "global"):
        new, _, _ = fix_config({"train_batch_size": 64, "train_micro_batch_size_per_gpu": 4,
                                "gradient_accumulation_steps": 8}, 2, keep=keep)
        assert deepspeed_verdict(new, 2).valid


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b'{"a": 1,', "line 1:9"),
        (b"[1, 2]", "array"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"a": 1, "a": 2}', "appears twice"),
        (b"[" * 100000 + b"]" * 100000, "unreadable"),
    ],
    ids=["empty", "blank", "unbalanced", "array", "latin1", "duplicate", "deep"],
)
def test_parse_errors_are_one_line(raw, needle):
    with pytest.raises(ConfigFileError) as info:
        parse_config_bytes(raw, "cfg.json")
    text = info.value.one_line()
    assert needle in text and "\n" not in text


@pytest.mark.parametrize(
    "cfg",
    [
        {"train_batch_size": 128, "train_micro_batch_size_per_gpu": 4.5,
         "gradient_accumulation_steps": 8},
        {"train_batch_size": 128.0, "train_micro_batch_size_per_gpu": 4},
        {"train_batch_size": 16, "train_micro_batch_size_per_gpu": 0.0},
        {"train_batch_size": 16, "gradient_accumulation_steps": True},
        {"train_batch_size": 10**30, "train_micro_batch_size_per_gpu": 4,
         "gradient_accumulation_steps": 8},
        {"train_batch_size": float("nan"), "train_micro_batch_size_per_gpu": 4},
        {"train_batch_size": -16, "train_micro_batch_size_per_gpu": 4},
    ],
    ids=["float-micro", "float-train", "float-zero", "bool", "huge", "nan", "negative"],
)
def test_verdict_on_odd_numbers_matches_deepspeed(cfg):
    """Floats and booleans are errors under --strict only; the verdict and the message we
    quote must be the ones DeepSpeed really gives for them."""
    theirs = deepspeed_verdict(cfg, 4)
    ours = check_config(cfg, 4)
    assert ours.valid == theirs.valid
    assert not check_config(cfg, 4, strict=True).valid
    if theirs.valid:
        assert ours.deepspeed_error is None
    else:
        assert ours.deepspeed_error == f"{theirs.error_type}: {theirs.message}"


def test_when_neither_keep_mode_works_the_advice_does_not_go_in_a_circle():
    cfg = {"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto"}
    for keep in ("micro", "global"):
        with pytest.raises(DsWizardError) as info:
            fix_config(cfg, 4, keep=keep)
        text = info.value.one_line()
        assert "--keep" not in text, text
        assert "--hf" in text and "train_micro_batch_size_per_gpu" in text
