"""The tune runner's reading of a candidate's metrics, and its candidate configs."""

from __future__ import annotations

from ds_wizard.core.check.checker import check_config
from ds_wizard.core.plan.memory import GiB, Strategy
from ds_wizard.core.plan.tune import Candidate
from ds_wizard.launch.tune import steady


def rec(step: int, elapsed: float, peaks: list[float] | None = None) -> dict:
    out = {"step": step, "elapsed_s": elapsed, "tokens": 1024 * step, "loss": 5.0}
    if peaks is not None:
        out["rank_peak_gib"] = peaks
    return out


def test_the_warm_up_step_is_not_timed_and_the_largest_rank_peak_counts() -> None:
    # step 1 took 9 s (warm-up); steps 2..4 took 2 s each
    records = [rec(1, 9.0, [0.5, 0.6]), rec(2, 11.0, [0.9, 0.8]), rec(3, 13.0, [0.9, 0.8]),
               rec(4, 15.0, [0.95, 1.0])]
    tps, timed, peaks = steady(records)
    assert timed == 3
    assert tps == round(3 * 1024 / 6.0, 1)
    assert peaks == [int(0.95 * GiB), int(1.0 * GiB)]


def test_one_step_is_not_enough_to_time() -> None:
    assert steady([rec(1, 9.0, [0.5, 0.5])])[:2] == (None, 0)
    assert steady([]) == (None, 0, [])


def test_candidate_configs_keep_the_global_batch_and_pass_check() -> None:
    from types import SimpleNamespace

    from ds_wizard.core.presets.lookup import load_preset
    from ds_wizard.launch import tune

    # the parts of the runner's _Setup that candidate_config reads
    setup = SimpleNamespace(
        preset=load_preset("tiny_mamba"), precision="fp32", report=None,
        base_config={"train_batch_size": 16, "train_micro_batch_size_per_gpu": 4,
                     "gradient_accumulation_steps": 2, "gradient_clipping": 1.0,
                     "zero_optimization": {"stage": 2}})

    for micro, gas in ((1, 8), (2, 4), (8, 1)):
        cfg = tune.candidate_config(setup, Candidate(micro, gas, 2, Strategy(3)))
        assert (cfg["train_batch_size"], cfg["train_micro_batch_size_per_gpu"],
                cfg["gradient_accumulation_steps"]) == (16, micro, gas)
        assert cfg["zero_optimization"]["stage"] == 3
        assert cfg["gradient_clipping"] == 1.0  # the rest of the plan's config is kept
        assert check_config(cfg, 2).valid
