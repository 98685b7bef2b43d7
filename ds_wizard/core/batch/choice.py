"""The batch a preset asks for on one world size: its reviewed entry, or its micro-batch with
the accumulation that reaches its global batch (DeepSpeed's rule in :mod:`batchmath`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ds_wizard.core.batch import batchmath
from ds_wizard.core.presets.schema import PresetSpec


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
