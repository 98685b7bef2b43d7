"""Rules a preset's own fields decide, used by every layer above: the precision a preset
resolves to, and the offload-versus-ZeRO-stage rule for a stage chosen after loading it."""

from __future__ import annotations

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.presets.schema import PresetSpec, offload_problem


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
