"""Memory-aware surfaces end to end: ``plan``, ``--auto`` fitted to GPU memory, ``check``."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from fakes import FOUR_A100, SEED_CONFIG, patch_gpus, write_seed

from ds_wizard.cli import main
from ds_wizard.core.check.checker import load_config_file
from ds_wizard.core.plan.fit import config_estimate
from ds_wizard.core.plan.memory import GiB, estimate
from ds_wizard.core.presets.lookup import load_preset


def _auto(runner, *args):
    return runner.invoke(main, ["--auto", "--preset", "7b_mamba", *args])


# --- --auto -----------------------------------------------------------------------------
def test_auto_8x80gib_picks_a_config_that_fits_and_says_why(runner, tmp_path):
    out = tmp_path / "ds.json"
    result = _auto(runner, "--num-gpus", "8", "--gpu-memory", "80GiB", "-o", str(out))
    assert result.exit_code == 0, result.output
    cfg = load_config_file(out)
    micro = cfg["train_micro_batch_size_per_gpu"]
    assert cfg["train_batch_size"] == 128 == micro * cfg["gradient_accumulation_steps"] * 8
    est = config_estimate(cfg, load_preset("7b_mamba").spec, 8, micro)
    assert est.fits(80 * GiB, 0.9)
    # one more sample per GPU would not fit: the choice is the memory's, not the preset's
    assert not config_estimate(cfg, load_preset("7b_mamba").spec, 8, micro + 2).fits(
        80 * GiB, 0.9)
    text = result.output
    assert "Why these numbers:" in text
    assert "GPU memory 80.0 GiB per GPU (--gpu-memory 80GiB); planning to 90%" in text
    assert "ZeRO-2: the preset's ZeRO-2; model states" in text
    assert "fits in memory" in text and "reaches the target" in text
    assert "estimated peak" in text


def test_auto_json_carries_the_estimate(runner):
    result = _auto(runner, "--num-gpus", "8", "--gpu-memory", "80GiB", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    mem = data["memory"]
    assert mem["total"] == sum(mem[k] for k in ("params", "grads", "optimizer", "activations",
                                                "logits", "overhead"))
    assert mem["total"] <= 0.9 * 80 * GiB
    assert mem["settings"]["micro_batch"] == data["train_micro_batch_size_per_gpu"]


def test_auto_1x24gib_says_plainly_it_needs_offload_and_what_else_would_fit(runner, tmp_path):
    out = tmp_path / "ds.json"
    result = _auto(runner, "--num-gpus", "1", "--gpu-memory", "24GiB", "-o", str(out))
    assert result.exit_code == 0, result.output
    text = result.output
    assert "the model does not fit on 1 GPU(s) of 24.0 GiB without offload" in text
    assert "CPU RAM per node" in text
    assert "without offload it would fit on" in text and "GPUs with ZeRO-3" in text
    assert "ZeRO-2 needs" in text  # the preset's own stage, and why it was left
    zero = load_config_file(out)["zero_optimization"]
    assert zero["stage"] == 3 and zero["offload_optimizer"]["device"] == "cpu"


def test_auto_that_cannot_fit_fails_plainly_and_writes_nothing(runner, tmp_path):
    out = tmp_path / "ds.json"
    result = _auto(runner, "--num-gpus", "1", "--gpu-memory", "8GiB", "-o", str(out))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: the model does not fit on 1 GPU(s) of 8.0 GiB")
    assert "would fit with:" in result.stderr and "train.seq_len=" in result.stderr
    assert "nothing was written" in result.stderr
    assert not out.exists()
    assert "Traceback" not in result.output


def test_auto_without_memory_info_keeps_the_preset_batch(runner):
    result = _auto(runner, "--num-gpus", "4", "--dry-run")
    assert result.exit_code == 0
    assert "128 = 4 × 8 × 4" in result.output
    assert "GPU memory unknown" in result.output


def test_auto_uses_the_smallest_detected_gpu(monkeypatch):
    patch_gpus(monkeypatch, FOUR_A100)
    result = CliRunner().invoke(main, ["--auto", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert any("smallest detected GPU (NVIDIA A100-SXM4-80GB)" in r for r in data["reasons"])
    assert data["memory"]["total"] <= 0.9 * 80 * GiB


def test_auto_given_micro_batch_that_does_not_fit_raises_the_stage(runner):
    result = _auto(runner, "--num-gpus", "8", "--gpu-memory", "80GiB", "--micro-batch", "4",
                   "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["train_micro_batch_size_per_gpu"] == 4 and data["train_batch_size"] == 128
    assert data["zero_stage"] == 3
    assert data["memory"]["total"] <= 0.9 * 80 * GiB


@pytest.mark.parametrize(("args", "message"), [
    (["--gpu-memory", "80"], "has no unit"),
    (["--gpu-memory", "lots"], "cannot read"),
])
def test_auto_bad_memory_sizes(runner, args, message):
    result = _auto(runner, "--num-gpus", "8", "--dry-run", *args)
    assert result.exit_code == 1 and message in result.stderr


def test_auto_headroom_is_checked(runner):
    assert _auto(runner, "--num-gpus", "8", "--headroom", "1.5").exit_code == 2
    assert runner.invoke(main, ["--headroom", "0.8"]).exit_code == 2  # needs --auto


# --- plan -------------------------------------------------------------------------------
def test_plan_table(runner):
    result = runner.invoke(main, ["plan", "--preset", "7b_mamba", "--num-gpus", "8",
                                  "--gpu-memory", "80GiB", "--micro-batch", "2"])
    assert result.exit_code == 0, result.output
    text = result.output
    est = estimate(load_preset("7b_mamba").spec, world_size=8, micro_batch=2)
    for part in ("params", "grads", "optimizer", "activations", "logits", "overhead", "total"):
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(part))
        assert f"{getattr(est, part) / GiB:.1f} GiB" in line, line
    usable = next(ln for ln in text.splitlines() if ln.strip().startswith("usable"))
    assert usable.split()[1:4] == ["72.0", "GiB", "(90%);"] and usable.endswith(": fits")
    assert "Largest micro-batch that fits: 3 (ZeRO-2)" in text
    # ZeRO-1 also fits 2 per GPU here, and is cheaper to run than ZeRO-2
    assert "Cheapest setting that fits: ZeRO-1 fits micro-batch 2" in text


def test_plan_json(runner):
    result = runner.invoke(main, ["plan", "--preset", "7b_mamba", "--num-gpus", "1",
                                  "--gpu-memory", "24GiB", "--json"])
    assert result.exit_code == 1, result.output  # the plan does not fit: exit 1 for scripts
    data = json.loads(result.output)
    assert data["fits"] is False and data["largest_micro_batch"] == 0
    assert data["gpu_memory"] == 24 * GiB and data["usable"] == int(0.9 * 24 * GiB)
    assert data["cheapest_fit"] is None
    assert "does not fit" in data["does_not_fit"]
    assert set(data["estimate"]) >= {"params", "grads", "optimizer", "activations", "logits",
                                     "overhead", "total", "settings"}


def test_plan_offload_and_stage_options(runner):
    result = runner.invoke(main, ["plan", "--preset", "7b_mamba", "--num-gpus", "8",
                                  "--nodes", "2", "--gpu-memory", "40GiB", "--zero-stage", "3",
                                  "--offload-optimizer", "cpu", "--json"])
    data = json.loads(result.output)
    assert result.exit_code == (0 if data["fits"] else 1), result.output
    s = data["estimate"]["settings"]
    assert (s["zero_stage"], s["offload_optimizer"], s["gpus_per_node"]) == (3, True, 4)
    assert data["estimate"]["optimizer"] == 0
    bad = runner.invoke(main, ["plan", "--preset", "7b_mamba", "--num-gpus", "8",
                               "--gpu-memory", "40GiB", "--offload-param", "cpu"])
    assert bad.exit_code == 1 and "needs ZeRO stage 3" in bad.stderr


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--gpu-memory", "80"], 1, "has no unit"),
    (["--gpu-memory", "80 gigs"], 1, "cannot read"),
    (["--gpu-memory", "0GiB"], 1, "must be positive"),
    ([], 1, "GPU memory unknown: no GPU detected"),
    (["--gpu-memory", "80GiB", "--nodes", "3"], 1, "does not split evenly"),
    (["--gpu-memory", "80GiB", "--headroom", "0"], 2, "headroom"),  # an option out of range
])
def test_plan_errors(runner, args, code, message):
    result = runner.invoke(main, ["plan", "--preset", "7b_mamba", "--num-gpus", "8", *args])
    assert result.exit_code == code, result.output
    assert message in result.stderr
    assert result.stderr.startswith("error: ")


def test_plan_needs_a_preset(runner):
    assert runner.invoke(main, ["plan", "--num-gpus", "8"]).exit_code == 2


# --- check ------------------------------------------------------------------------------
def test_check_warns_when_the_config_does_not_fit(runner, tmp_path):
    seed = write_seed(tmp_path)  # 7B at micro-batch 4 under ZeRO-2
    result = runner.invoke(main, ["check", str(seed), "--num-gpus", "4", "--preset",
                                  "7b_mamba", "--gpu-memory", "80GiB"])
    assert "estimated peak memory" in result.output and "exceeds 72.0 GiB" in result.output
    assert "micro-batch 2 would fit" in result.output
    as_json = runner.invoke(main, ["check", str(seed), "--num-gpus", "4", "--preset",
                                   "7b_mamba", "--gpu-memory", "80GiB", "--json"])
    assert as_json.exit_code == 1, as_json.output  # the seed's batch: 16 != 4 × 8 × 4
    data = json.loads(as_json.output)
    assert data["memory"]["fits"] is False
    assert any("estimated peak memory" in w for w in data["warnings"])


def test_check_is_quiet_when_it_fits_and_needs_a_preset(runner, tmp_path):
    seed = write_seed(tmp_path)
    fixed = tmp_path / "fixed.json"  # the seed with its batch repaired: 128 = 4 × 8 × 4
    fixed.write_text(json.dumps({**SEED_CONFIG, "train_batch_size": 128}), encoding="utf-8")
    args = ["check", str(fixed), "--num-gpus", "4", "--preset", "7b_mamba",
            "--gpu-memory", "141GiB"]
    ok = runner.invoke(main, args)
    assert ok.exit_code == 0, ok.output
    assert ok.output.startswith("✅ VALID")
    assert "estimated peak memory" not in ok.output and "warnings:" not in ok.output
    as_json = runner.invoke(main, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    assert data["valid"] is True and data["warnings"] == []
    assert data["memory"]["fits"] is True and data["memory"]["gpu_memory"] == 141 * GiB
    assert 0 < data["memory"]["total"] <= 0.9 * 141 * GiB
    unknown = runner.invoke(main, ["check", str(seed), "--num-gpus", "4", "--preset",
                                   "7b_mamba"])
    assert "memory not checked: GPU memory unknown" in unknown.output
    assert runner.invoke(main, ["check", str(seed), "--gpu-memory", "80GiB"]).exit_code == 2


def test_plan_exit_status_says_whether_it_fits(runner):
    big = runner.invoke(main, ["plan", "--preset", "7b_mamba", "--num-gpus", "1",
                               "--gpu-memory", "24GiB"])
    assert big.exit_code == 1 and "DOES NOT FIT" in big.output
    small = runner.invoke(main, ["plan", "--preset", "tiny_mamba", "--num-gpus", "1",
                                 "--gpu-memory", "24GiB"])
    assert small.exit_code == 0 and "DOES NOT FIT" not in small.output
