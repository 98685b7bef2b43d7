"""Choosing a complete DeepSpeed config for a preset and a GPU count.

:func:`auto_configure` is the one entry point behind ``ds-wizard --auto``, ``generate``
and the TUI, so all of them pick the same batch for the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.batch import batchmath
from ds_wizard.core.batch.choice import BatchChoice, choose_batch
from ds_wizard.core.config.dsconfig import build_config
from ds_wizard.core.config.summary import model_type, summary_lines
from ds_wizard.core.plan.backends import DEFAULT_KERNEL_BACKEND
from ds_wizard.core.plan.fit import GpuMemory, choose_fit
from ds_wizard.core.plan.gpus import GpuInventory
from ds_wizard.core.plan.measured import Entry, measured_choice
from ds_wizard.core.plan.memory import DEFAULT_HEADROOM, MemoryEstimate
from ds_wizard.core.plan.params import count_params
from ds_wizard.core.presets.lookup import Preset
from ds_wizard.core.presets.rules import preset_precision, requested_precision
from ds_wizard.core.presets.schema import PresetSpec


@dataclass(frozen=True)
class AutoResult:
    """A config that DeepSpeed accepts, and why each number was chosen."""

    preset: Preset
    config: dict[str, Any]
    choice: BatchChoice
    precision: str
    params: int
    reasons: tuple[str, ...] = field(default=())
    # set when GPU memory was known and the choice was fitted to it
    memory: MemoryEstimate | None = None

    @property
    def world_size(self) -> int:
        return self.choice.world_size

    @property
    def zero_stage(self) -> int:
        return int(self.config["zero_optimization"]["stage"])

    def summary(self) -> list[str]:
        """The source document's summary lines (see :func:`report.summary_lines`)."""
        return summary_lines(
            self.config, self.world_size,
            model_type=model_type(self.preset.spec.model.arch), params=self.params,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "preset": self.preset.name,
            "model_type": model_type(self.preset.spec.model.arch),
            "params": self.params,
            "world_size": self.world_size,
            "train_batch_size": self.choice.global_batch,
            "train_micro_batch_size_per_gpu": self.choice.micro_batch,
            "gradient_accumulation_steps": self.choice.grad_accum,
            "formula": self.choice.formula,
            "zero_stage": self.zero_stage,
            "precision": self.precision,
            "valid": True,
            "reasons": list(self.reasons),
            "memory": self.memory.to_dict() if self.memory else None,
            "config": self.config,
        }


def auto_configure(
    preset: Preset,
    num_gpus: int,
    *,
    gpu_report: GpuInventory | None = None,
    precision: str = "auto",
    micro_batch: int | None = None,
    grad_accum: int | None = None,
    global_batch: int | None = None,
    zero_stage: int | None = None,
    gpu_memory: GpuMemory | None = None,
    headroom: float = DEFAULT_HEADROOM,
    backend: str = DEFAULT_KERNEL_BACKEND,
    device: str = "cuda",
    measured: Entry | None = None,
) -> AutoResult:
    """Build the config for ``num_gpus`` data-parallel ranks.

    Without explicit batch values the preset's batch plan decides (its pinned entry for
    this GPU count, else its micro-batch with accumulation reaching its target global
    batch). Explicit values win; ones that cannot be combined raise DsWizardError with
    the nearest workable alternative.

    With ``gpu_memory`` the choice is fitted to it (:func:`fit.choose_fit`): the largest
    micro-batch under ``headroom``, the ZeRO stage raised and then offload added when model
    states do not fit; :class:`fit.DoesNotFit` when nothing does.

    ``device="cpu"``: the ranks run on CPU, where precision ``auto`` means fp32.

    ``measured``: what ``ds-wizard tune`` measured on this machine for this preset and
    world size (:func:`measured.lookup`). Without explicit batch values, its choice at the
    target global batch is used, and its measured peak stands in for the estimate.
    """
    if num_gpus < 1:
        raise DsWizardError(f"number of GPUs must be at least 1, got {num_gpus}",
                            "pass --num-gpus N with N >= 1")
    for name, value in (("micro batch", micro_batch), ("gradient accumulation", grad_accum),
                        ("global batch", global_batch)):
        if value is not None and value < 1:
            raise DsWizardError(f"{name} must be at least 1, got {value}")
    if zero_stage is not None and zero_stage not in (0, 1, 2, 3):
        raise DsWizardError(f"ZeRO stage must be 0, 1, 2 or 3, got {zero_stage}")

    spec = preset.spec
    bf16 = gpu_report.bf16_supported if gpu_report is not None else None
    requested = requested_precision(spec, precision)
    used = preset_precision(spec, precision, bf16, device)
    given = (micro_batch, grad_accum, global_batch) != (None, None, None)
    tuned = _tuned(spec, num_gpus, measured, micro_batch, grad_accum, global_batch, zero_stage)
    if tuned is not None:
        micro_batch, grad_accum, global_batch, zero_stage = tuned[:4]
        gpu_memory = None  # the measured peak is the fit verdict (it was within headroom)
        given = True
    choice = _choose_batch(spec, num_gpus, micro_batch, grad_accum, global_batch) \
        if given or gpu_memory is None else None
    fit = None
    offload_opt = offload_par = None
    if gpu_memory is not None:
        fit = choose_fit(
            spec, num_gpus, gpu_memory, headroom=headroom, zero_stage=zero_stage,
            micro_batch=choice.micro_batch if choice else None,
            grad_accum=choice.grad_accum if choice else None,
            global_batch=choice.global_batch if choice else None,
            precision=used, backend=backend,
        )
        choice = fit.choice
        zero_stage = fit.strategy.zero_stage
        offload_opt = "cpu" if fit.strategy.offload_optimizer else "none"
        offload_par = "cpu" if fit.strategy.offload_param else "none"
    assert choice is not None
    config = build_config(spec, choice, precision=used, bf16_supported=bf16,
                          zero_stage=zero_stage, offload_optimizer=offload_opt,
                          offload_param=offload_par)
    # Belt and braces: never hand out a triplet DeepSpeed would reject.
    res = batchmath.resolve(config["train_batch_size"], config["train_micro_batch_size_per_gpu"],
                            config["gradient_accumulation_steps"], num_gpus)
    if not res.valid:  # pragma: no cover - the choice above is constructed to be valid
        raise DsWizardError(f"internal error: generated batch is invalid: {res.error}")

    reasons = list(fit.reasons if fit else choice.reasons)
    if tuned is not None:
        reasons = [tuned[4], "the measured peak is used for the fit instead of the estimate"]
    reasons.append(_precision_reason(requested, used, gpu_report))
    return AutoResult(preset, config, choice, used, count_params(spec.model), tuple(reasons),
                      fit.estimate if fit else None)


def _tuned(spec: PresetSpec, ws: int, measured: Entry | None, micro: int | None,
           gas: int | None, target: int | None, stage: int | None,
           ) -> tuple[int, int, int, int, str] | None:
    """The tuned choice when the user gave no batch values and the tune kept this target
    global batch: (micro, accumulation, global, stage, reason)."""
    if measured is None or (micro, gas) != (None, None):
        return None
    goal = target or spec.batch.for_world_size(ws).global_batch
    picked = measured_choice(measured, goal)
    if picked is None or (stage is not None and stage != picked[2]):
        return None
    m, g, z = picked
    return m, g, goal, z, f"micro-batch {m} × accumulation {g}: {measured.line()}"


def _precision_reason(requested: str, used: str, report: GpuInventory | None) -> str:
    if requested == "auto" and used == "fp32":
        return "precision fp32: CPU ranks have no fast 16-bit path"
    if requested != "auto":
        return f"precision {used}: set by the preset or --precision"
    if report is None or not report.gpus:
        return "precision bf16: no GPU seen here, assuming Ampere or newer (use --precision)"
    if used == "bf16":
        return "precision bf16: every detected GPU supports it"
    return "precision fp16: a detected GPU predates Ampere and has no bf16"


def _choose_batch(
    spec: PresetSpec,
    ws: int,
    micro: int | None,
    gas: int | None,
    target: int | None,
) -> BatchChoice:
    if micro is None and gas is None and target is None:
        return choose_batch(spec, ws)
    if micro is not None and gas is not None:
        if target is not None and target != micro * gas * ws:
            raise DsWizardError(
                f"global batch {target} != {micro} × {gas} × {ws} = {micro * gas * ws}",
                "drop one of --global-batch, --micro-batch, --grad-accum",
            )
        return BatchChoice(micro, gas, ws, ("micro-batch and accumulation given",))
    if target is None:
        if gas is not None:
            micro = spec.batch.for_world_size(ws).micro_batch
            return BatchChoice(micro, gas, ws, (f"preset micro-batch {micro}, accumulation "
                                                f"{gas} given",))
        return choose_batch(spec, ws, micro_batch=micro)
    sol = batchmath.solve(ws, target, max_micro=target, max_gas=target)
    if micro is not None:
        pairs = [p for p in sol.pairs if p[0] == micro]
    elif gas is not None:
        pairs = [p for p in sol.pairs if p[1] == gas]
    else:
        preferred = spec.batch.for_world_size(ws).micro_batch
        pairs = [p for p in sol.pairs if p[0] <= preferred]
    if not pairs:
        fixed = (f"micro-batch {micro}" if micro is not None
                 else f"accumulation {gas}" if gas is not None else "")
        near = [x for x in (sol.lower, sol.upper) if x is not None and x != target]
        hint = ("nearest valid global batches: " + " or ".join(map(str, near))) if near else (
            "choose another micro-batch or accumulation")
        raise DsWizardError(
            f"global batch {target} cannot be split over {ws} GPU(s)"
            + (f" with {fixed}" if fixed else ""),
            hint,
        )
    m, g = pairs[0]
    return BatchChoice(m, g, ws, (f"global batch {target} given: {m} × {g} × {ws}",))
