"""``ds-wizard plan`` decided: the per-GPU memory of a preset on a topology, the largest
micro-batch and the cheapest ZeRO stage or offload that fit, as one :class:`MemoryPlan`.

    plan = memory_plan(preset, topo, gpu_memory="80GiB", micro=2)
    plan.fits, plan.as_dict(), plan.table_rows()

The JSON (:meth:`MemoryPlan.as_dict`) and the text view are both read from the same
object, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.plan.backends import resolve_backend
from ds_wizard.core.plan.fit import (
    DoesNotFit,
    FitResult,
    GpuMemory,
    check_headroom,
    choose_fit,
    gib,
    gpu_memory_from,
)
from ds_wizard.core.plan.memory import MemoryEstimate, estimate, largest_micro_batch
from ds_wizard.core.plan.params import count_params, human_count

if TYPE_CHECKING:
    from ds_wizard.core.batch.topology import Topology
    from ds_wizard.core.plan.gpus import GpuInventory
    from ds_wizard.core.presets.lookup import Preset

#: the parts of the per-GPU estimate, in the order the plan lists them
PARTS = ("params", "grads", "optimizer", "activations", "logits", "overhead")


@dataclass(frozen=True)
class MemoryPlan:
    """Everything ``plan`` shows; the exit status is 0 exactly when :attr:`fits`."""

    preset: str
    arch: str
    params: int
    num_gpus: int  # data-parallel ranks
    nodes: int
    estimate: MemoryEstimate
    gpu: GpuMemory
    headroom: float
    largest_micro_batch: int
    cheapest: FitResult | None  # the cheapest strategy that fits the micro-batch
    does_not_fit: str | None  # why nothing fits, with advice; None when something does
    backend_reason: str
    # what `ds-wizard tune` measured on this machine for this micro-batch and stage
    # (core.plan.measured): its verdict is the fit, instead of the estimate's
    measured: dict[str, Any] | None = None
    measured_line: str | None = None

    @property
    def usable(self) -> int:
        return self.gpu.usable(self.headroom)

    @property
    def fits(self) -> bool:
        if self.measured is not None:
            return bool(self.measured.get("fits"))
        return self.estimate.fits(self.gpu.bytes, self.headroom)

    @property
    def strategy(self) -> str:
        """ZeRO-2, ZeRO-3 + optimizer and params offload, …"""
        s = self.estimate.settings
        offload = [w for w, on in (("optimizer", s.offload_optimizer),
                                   ("params", s.offload_param)) if on]
        return f"ZeRO-{s.zero_stage}" + (f" + {' and '.join(offload)} offload" if offload
                                         else "")

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` object."""
        cheapest = self.cheapest
        return {
            "preset": self.preset, "params": self.params,
            "gpu_memory": self.gpu.bytes, "gpu_memory_source": self.gpu.source,
            "headroom": self.headroom, "usable": self.usable, "fits": self.fits,
            "estimate": self.estimate.to_dict(), "largest_micro_batch": self.largest_micro_batch,
            "cheapest_fit": None if cheapest is None else {
                "zero_stage": cheapest.strategy.zero_stage,
                "offload_optimizer": cheapest.strategy.offload_optimizer,
                "offload_param": cheapest.strategy.offload_param,
                "micro_batch": self.estimate.settings.micro_batch,
                "total": cheapest.estimate.total,
            },
            "does_not_fit": self.does_not_fit,
            "backend_reason": self.backend_reason,
            "measured_here": self.measured,
            "measured_line": self.measured_line,
        }

    def heading(self) -> list[str]:
        """What is planned: the model, the batch, the layout and the backend."""
        s = self.estimate.settings
        return [
            f"Memory plan: {self.preset} ({self.arch}, {human_count(self.params)} params), "
            f"seq_len {s.seq_len}, micro-batch {s.micro_batch}",
            f"{self.num_gpus} GPU(s) on {self.nodes} node(s), {self.strategy}, {s.precision}, "
            f"backend {s.backend}, activation checkpointing "
            + ("on" if s.activation_checkpointing else "off"),
            f"backend {s.backend}: {self.backend_reason}",
        ]

    def table_rows(self) -> list[tuple[str, str, str]]:
        """(what, per GPU, note): each part, the total, the GPU and the usable memory."""
        est = self.estimate
        rows = [(part, gib(getattr(est, part)), "") for part in PARTS]
        verdict = "fits" if est.fits(self.gpu.bytes, self.headroom) else "DOES NOT FIT"
        rows += [("total", gib(est.total), ""),
                 ("GPU memory", gib(self.gpu.bytes), f"({self.gpu.source})"),
                 ("usable", gib(self.usable), f"({self.headroom:.0%}); headroom "
                                              f"{gib(self.usable - est.total)}: {verdict}")]
        s = est.settings
        if est.cpu_per_node and (s.offload_optimizer or s.offload_param):
            rows.append(("CPU per node", gib(est.cpu_per_node), "(DeepSpeed's estimate)"))
        m = self.measured
        if m is not None:
            rows.append(("measured here", gib(m.get("measured_peak_bytes") or 0),
                         f"({'fits' if m.get('fits') else m.get('status')}; used for the fit "
                         "instead of the estimate)"))
        return rows

    def verdict_lines(self) -> list[str]:
        """The largest micro-batch, then the cheapest setting that fits (or why none)."""
        lines = [f"Largest micro-batch that fits: {self.largest_micro_batch or 'none (not even 1)'}"
                 f" ({self.strategy})"]
        if self.cheapest is not None:
            lines.append(f"Cheapest setting that fits: {self.cheapest.strategy.label} fits "
                         f"micro-batch {self.estimate.settings.micro_batch} "
                         f"({gib(self.cheapest.estimate.total)})")
        else:
            lines.append(f"Nothing fits: {self.does_not_fit}")
        if self.measured_line:
            lines.append(self.measured_line)
        return lines


def _offload(choice: str | None) -> bool | None:
    """``--offload-*``: None leaves the preset's choice."""
    return None if choice is None else choice != "none"


def memory_plan(preset: Preset, topo: Topology, *, gpu_memory: str | None = None,
                gpu_report: GpuInventory | None = None, micro: int | None = None,
                zero: int | None = None, offload_optimizer: str | None = None,
                offload_param: str | None = None, precision: str = "auto",
                backend: str = "auto", checkpointing: bool | None = None,
                headroom: float = 0.9) -> MemoryPlan:
    """The plan for ``preset`` on ``topo``'s data-parallel ranks.

    The GPU memory is ``gpu_memory`` ("80GiB"), else the smallest GPU of ``gpu_report``
    (detected here when neither is given); the backend is the one a launch here would run
    (``auto``). A DsWizardError when the memory is unknown or a setting is impossible.
    """
    check_headroom(headroom)
    if gpu_memory is None and gpu_report is None:
        from ds_wizard.core.plan.gpus import detect_gpus

        gpu_report = detect_gpus()
    gpu = gpu_memory_from(gpu_memory, gpu_report)
    spec = preset.spec
    entry = None
    if gpu_memory is None:
        # planning for this machine: what `ds-wizard tune` measured here, if anything
        from ds_wizard.core.plan.measured import here_entry, measured_choice

        entry = here_entry(spec, topo.data_parallel, gpu_report)
        picked = measured_choice(entry, spec.batch.for_world_size(
            topo.data_parallel).global_batch)
        if picked is not None and micro is None and zero in (None, picked[2]):
            micro, zero = picked[0], picked[2]
        if gpu is None and entry is not None and entry.data.get("limit_bytes"):
            # CPU ranks here: the RAM per rank the tune judged its candidates against
            held = float(entry.data.get("headroom") or headroom)
            gpu = GpuMemory(int(entry.data["limit_bytes"] / held),
                            "available RAM per CPU rank here, when `tune` ran")
    if gpu is None:
        raise DsWizardError("GPU memory unknown" if gpu_report is None
                            else f"GPU memory unknown: no GPU detected ({gpu_report.reason})",
                            "pass --gpu-memory, e.g. --gpu-memory 80GiB")
    here = gpu_report is not None and gpu_report.count > 0
    decision = resolve_backend(
        backend, cuda=True, arch=spec.model.arch, here=here,
        compute_capability=min(g.compute_capability for g in gpu_report.gpus)
        if gpu_report is not None and here else None)
    settings: dict[str, Any] = {
        "gpus_per_node": topo.gpus_per_node, "backend": decision.name, "precision": precision,
        "activation_checkpointing": checkpointing,
        "bf16_supported": gpu_report.bf16_supported if gpu_report is not None else None,
    }
    # estimate() refuses offload the stage cannot carry
    chosen = dict(settings, world_size=topo.data_parallel, zero_stage=zero,
                  offload_optimizer=_offload(offload_optimizer),
                  offload_param=_offload(offload_param))
    est = estimate(spec, micro_batch=micro, **chosen)
    largest = largest_micro_batch(spec, gpu.bytes, headroom, **chosen)
    cheapest, no_fit = None, None
    try:
        cheapest = choose_fit(spec, topo.data_parallel, gpu, headroom=headroom,
                              micro_batch=est.settings.micro_batch, from_stage=0, **settings)
    except DoesNotFit as exc:
        no_fit = exc.message + (("; would fit with: " + "; ".join(exc.advice))
                                if exc.advice else "")
    measured = _measured_row(entry, est.settings.micro_batch, est.settings.zero_stage)
    return MemoryPlan(preset.name, spec.model.arch, count_params(spec.model), topo.data_parallel,
                      topo.nodes, est, gpu, headroom, largest, cheapest, no_fit,
                      decision.reason, measured, entry.line() if entry is not None else None)


def _measured_row(entry: Any, micro: int, stage: int) -> dict[str, Any] | None:
    """The tune's measurement of this micro-batch and stage, if it ran one."""
    if entry is None:
        return None
    for c in entry.candidates:
        if c.get("micro_batch") == micro and c.get("zero_stage") == stage \
                and c.get("measured_peak_bytes"):
            return c
    return None
