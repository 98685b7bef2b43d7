"""First run: what DeepSpeed would compile, torch's AdamW on CPU, no step at lr 0."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ds_wizard.core.batch.choice import choose_batch
from ds_wizard.core.config.dsconfig import build_config
from ds_wizard.core.presets.lookup import load_preset
from ds_wizard.core.runs import jit_ops
from ds_wizard.core.runs.first_step import FIRST_STEP


@pytest.fixture
def tiny_cfg() -> dict:
    spec = load_preset("tiny_mamba").spec
    return build_config(spec, choose_batch(spec, 2), precision="fp32")


def test_cpu_ranks_use_torch_adamw_and_compile_nothing(tiny_cfg: dict, tmp_path: Path) -> None:
    env = {"TORCH_EXTENSIONS_DIR": str(tmp_path)}
    assert [b.name for b in jit_ops.expected_builds("cpu", tiny_cfg, skip_shm=False, env=env)] \
        == ["deepspeed_shm_comm", "fused_adam"]
    cfg, changed = jit_ops.with_torch_adam(tiny_cfg)
    assert changed and cfg["optimizer"]["params"]["torch_adam"] is True
    assert "torch_adam" not in tiny_cfg["optimizer"]["params"]  # a copy
    assert jit_ops.expected_builds("cpu", cfg, env=env) == []
    assert jit_ops.first_run_notice([]) is None


def test_a_users_torch_adam_false_is_kept_and_announced(tiny_cfg: dict, tmp_path: Path) -> None:
    tiny_cfg["optimizer"]["params"]["torch_adam"] = False
    cfg, changed = jit_ops.with_torch_adam(tiny_cfg)
    assert not changed
    builds = jit_ops.expected_builds("cpu", cfg, env={"TORCH_EXTENSIONS_DIR": str(tmp_path)},
                                     cpu_count=2)
    notice = jit_ops.first_run_notice(builds)
    assert notice is not None and "fused_adam" in notice and "min" in notice


def test_a_cached_op_is_not_announced(tiny_cfg: dict, tmp_path: Path) -> None:
    (tmp_path / "fused_adam").mkdir()
    (tmp_path / "fused_adam" / "fused_adam.so").write_bytes(b"\x7fELF")
    env = {"TORCH_EXTENSIONS_DIR": str(tmp_path)}
    assert jit_ops.expected_builds("cuda", tiny_cfg, env=env) == []
    tiny_cfg["zero_optimization"]["offload_optimizer"] = {"device": "cpu"}
    assert [b.name for b in jit_ops.expected_builds("cuda", tiny_cfg, env=env)] == ["cpu_adam"]


def test_launch_config_for_cpu_ranks_has_torch_adam(tmp_path: Path) -> None:
    from ds_wizard.core.runs.runspec import Accelerator
    from ds_wizard.launch.plan import resolve_config

    preset = load_preset("tiny_mamba")
    cpu, _ = resolve_config(preset, 2, Accelerator("cpu", 0, "test"))
    gpu, _ = resolve_config(preset, 2, Accelerator("cuda", 2, "test"))
    assert cpu["optimizer"]["params"]["torch_adam"] is True
    assert "torch_adam" not in gpu["optimizer"]["params"]


def test_first_step_line() -> None:
    assert FIRST_STEP.match("step      1/40  loss 6.9726  lr 1.00e-05")
    assert not FIRST_STEP.match("training steps 1..40 (log every 1, checkpoint every 20)")


@pytest.fixture
def ds_warnings():
    """What DeepSpeed's own logger emits (it has its own handler and does not propagate)."""
    from deepspeed.utils import logger

    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger.addHandler(handler)
    yield seen
    logger.removeHandler(handler)


def test_no_step_trains_at_lr_0_and_no_warning(tiny_cfg: dict, ds_warnings: list) -> None:
    import torch

    from ds_wizard.train.ds_setup import client_scheduler

    rest, build = client_scheduler(tiny_cfg)
    assert "scheduler" not in rest and build is not None
    param = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([param], lr=tiny_cfg["optimizer"]["params"]["lr"])
    sched = build(opt)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])  # what the next optimizer step uses
        sched.step()
    assert all(lr > 0 for lr in lrs) and lrs == sorted(lrs)
    assert not [w for w in ds_warnings if "before it has started" in w]


def test_deepspeeds_own_start_would_warn_and_train_at_0(tiny_cfg: dict,
                                                        ds_warnings: list) -> None:
    # the behaviour client_scheduler avoids; if DeepSpeed changes it, this says so
    import torch
    from deepspeed.runtime.lr_schedules import WarmupCosineLR

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    WarmupCosineLR(opt, **tiny_cfg["scheduler"]["params"])
    assert opt.param_groups[0]["lr"] == 0.0
    assert [w for w in ds_warnings if "before it has started" in w]
