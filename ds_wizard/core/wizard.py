"""Decisions the wizard makes that are not about widgets, kept here so they can be tested
and reused without Textual."""

from __future__ import annotations

from ds_wizard.core.schema import PresetSpec


def with_batch(spec: PresetSpec, world_size: int, micro: int, gas: int) -> PresetSpec:
    """``spec`` with ``micro × gas × world_size`` as its batch, re-validated.

    A preset that pins a plan for this world size gets that pin replaced; otherwise its
    base batch changes, so other world sizes derive from the new target as usual.
    """
    from ds_wizard.core.overrides import PINNED_PREFIX, apply_overrides

    prefix = "batch."
    if str(world_size) in spec.batch.by_world_size:
        prefix = f"{PINNED_PREFIX}{world_size}."
    return apply_overrides(spec, [f"{prefix}micro_batch={micro}",
                                  f"{prefix}global_batch={micro * gas * world_size}"])
