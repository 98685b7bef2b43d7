"""Preset + world size → a complete DeepSpeed JSON config.

One function, used by the CLI (``--auto``, ``generate``), the TUI and the launcher, so
every surface writes the same file for the same choices.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ds_wizard.core import batchmath
from ds_wizard.core.errors import DsWizardError
from ds_wizard.core.schema import PresetSpec, offload_problem


@dataclass(frozen=True)
class BatchChoice:
    """The triplet chosen for one world size, with the reasons a summary prints."""

    micro_batch: int
    grad_accum: int
    world_size: int
    reasons: tuple[str, ...] = field(default=())

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.grad_accum * self.world_size

    @property
    def formula(self) -> str:
        return f"{self.global_batch} = {self.micro_batch} × {self.grad_accum} × {self.world_size}"


def choose_batch(spec: PresetSpec, world_size: int, micro_batch: int | None = None) -> BatchChoice:
    """The preset's batch for ``world_size``: its reviewed entry if it has one, else the
    default micro-batch with gradient accumulation chosen to reach the target global batch.

    ``micro_batch`` overrides the preset's (the memory model uses this).
    """
    if world_size < 1:
        raise ValueError(f"world size must be >= 1, got {world_size}")
    plan = spec.batch.for_world_size(world_size)
    reasons = []
    if str(world_size) in spec.batch.by_world_size:
        reasons.append(
            f"the preset pins micro {plan.micro_batch}, global {plan.global_batch} "
            f"for {world_size} data-parallel rank(s)"
        )
    micro = micro_batch if micro_batch is not None else plan.micro_batch
    if micro_batch is None and micro * world_size > plan.global_batch:
        # more ranks than the target needs at this micro-batch: shrink the micro-batch
        # rather than overshoot the global batch the recipe was tuned for
        micro = max(1, plan.global_batch // world_size)
        reasons.append(
            f"micro-batch lowered to {micro} so {world_size} ranks do not overshoot "
            f"the target global batch {plan.global_batch}"
        )
    gas, why = batchmath.pick_grad_accum(world_size, micro, plan.global_batch)
    reasons.append(f"gradient accumulation {gas}: {why}")
    return BatchChoice(micro, gas, world_size, tuple(reasons))


def resolve_precision(requested: str, bf16_supported: bool | None) -> str:
    """``auto`` → bf16 where the GPUs support it, fp16 where they do not.

    ``bf16_supported`` is None when no GPU was seen (a config written for another
    machine): assume bf16, which every GPU since Ampere has.
    """
    if requested != "auto":
        return requested
    if bf16_supported is False:
        return "fp16"
    return "bf16"


def requested_precision(spec: PresetSpec, precision: str | None = None) -> str:
    """``precision``, or the preset's when it is None or ``auto`` (maybe still ``auto``)."""
    return spec.train.precision if precision in (None, "auto") else precision


def preset_precision(spec: PresetSpec, precision: str | None = None,
                     bf16_supported: bool | None = None, device: str = "cuda") -> str:
    """The one precision rule: ``precision``, or the preset's when it is None or ``auto``,
    with ``auto`` resolved for the GPUs (:func:`resolve_precision`) — and fp32 on CPU
    ranks (``device="cpu"``), which have no fast 16-bit path."""
    requested = requested_precision(spec, precision)
    if device == "cpu" and requested == "auto":
        return "fp32"
    return resolve_precision(requested, bf16_supported)


def check_offload(zero_stage: int, offload_optimizer: bool, offload_param: bool) -> None:
    """The preset schema's offload rule, for a stage or offload chosen after loading it
    (``--zero-stage``, ``plan --zero``)."""
    problem = offload_problem(zero_stage, offload_optimizer, offload_param)
    if problem:
        raise DsWizardError(problem, "choose another ZeRO stage, or no offload")


def build_config(
    spec: PresetSpec,
    choice: BatchChoice,
    *,
    precision: str = "auto",
    bf16_supported: bool | None = None,
    zero_stage: int | None = None,
    offload_optimizer: str | None = None,
    offload_param: str | None = None,
) -> dict[str, Any]:
    """The DeepSpeed config dict, keys in the order a person reads them."""
    train = spec.train
    ds = spec.deepspeed
    stage = ds.zero_stage if zero_stage is None else zero_stage
    off_opt = ds.offload_optimizer if offload_optimizer is None else offload_optimizer
    off_par = ds.offload_param if offload_param is None else offload_param
    check_offload(stage, off_opt != "none", off_par != "none")
    prec = preset_precision(spec, precision, bf16_supported)

    cfg: dict[str, Any] = {
        "train_batch_size": choice.global_batch,
        "train_micro_batch_size_per_gpu": choice.micro_batch,
        "gradient_accumulation_steps": choice.grad_accum,
        "gradient_clipping": train.grad_clip,
        "steps_per_print": ds.steps_per_print,
    }
    if prec == "bf16":
        cfg["bf16"] = {"enabled": True}
    elif prec == "fp16":
        cfg["fp16"] = {
            "enabled": True,
            "loss_scale": 0,
            "initial_scale_power": 16,
            "loss_scale_window": 1000,
            "hysteresis": 2,
            "min_loss_scale": 1,
        }
    elif prec == "autocast":
        # fp32 master params with bf16 compute: what the Mamba README recommends, since
        # SSM parameters are sensitive to 16-bit storage
        cfg["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}

    zero: dict[str, Any] = {"stage": stage}
    if stage > 0:
        zero.update({"overlap_comm": ds.overlap_comm,
                     "contiguous_gradients": ds.contiguous_gradients})
    if stage in (1, 2):
        # only the ZeRO-1/2 optimizer reads these two, so a ZeRO-3 config leaves them out
        zero.update({"allgather_partitions": True, "reduce_scatter": True})
    if off_opt != "none":
        zero["offload_optimizer"] = {"device": off_opt, "pin_memory": True}
    if off_par != "none":
        zero["offload_param"] = {"device": off_par, "pin_memory": True}
    cfg["zero_optimization"] = zero

    cfg["optimizer"] = optimizer_block(spec)
    cfg["scheduler"] = {
        "type": "WarmupCosineLR",
        "params": {
            "total_num_steps": train.total_steps,
            "warmup_num_steps": train.warmup_steps,
            "warmup_type": "linear",
            "warmup_min_ratio": 0.0,
            "cos_min_ratio": train.min_lr / train.lr,
        },
    }
    cfg["wall_clock_breakdown"] = False
    return cfg


def optimizer_block(spec: PresetSpec) -> dict[str, Any]:
    """The preset's optimizer as DeepSpeed's ``optimizer`` section."""
    train = spec.train
    return {
        "type": "AdamW",
        "params": {
            "lr": train.lr,
            "betas": list(train.betas),
            "eps": train.eps,
            "weight_decay": train.weight_decay,
        },
    }


def dumps(cfg: dict[str, Any]) -> str:
    """The one JSON text format every writer uses, so files compare byte for byte."""
    return json.dumps(cfg, indent=2) + "\n"
