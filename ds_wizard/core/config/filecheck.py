"""``ds-wizard check`` decided: a DeepSpeed config file judged as DeepSpeed will judge it
(:mod:`core.check`), filled as the HF Trainer fills it (``--hf``), against the memory of a
GPU (:mod:`core.plan`, with a preset), and by DeepSpeed's own parser (``--deep``), as one
:class:`FileCheck`. It sits in ``config`` because it uses both ``check`` and ``plan``.

    done = check_file(Path("ds.json"), world)
    done.valid, done.as_dict(), done.lines()

The JSON (:meth:`FileCheck.as_dict`) and the text (:meth:`FileCheck.lines`) are read from
the same object, so they cannot disagree.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ds_wizard.core.check.checker import (
    DEEPSPEED_VERDICT,
    CheckReport,
    check_config,
    load_config_file,
)
from ds_wizard.core.check.hfmode import HfFill, fill_like_trainer, parse_hf_args

if TYPE_CHECKING:
    from ds_wizard.core.batch.world import WorldSize
    from ds_wizard.core.plan.gpus import GpuInventory
    from ds_wizard.core.presets.schema import PresetSpec

#: DeepSpeed's own parser on (config, world size): ``ds_wizard.deepcheck.deep_check``,
#: passed in by the caller (it imports DeepSpeed, which core must not)
DeepCheck = Callable[[dict[str, Any], int], Any]


@dataclass(frozen=True)
class FileCheck:
    """The verdict on one file; ``valid`` decides the exit status."""

    config: Path
    report: CheckReport
    world: WorldSize
    filled: HfFill | None = None
    memory: dict[str, Any] | None = None  # the estimate against the GPU, with --preset
    deep: Any = None  # ds_wizard.deepcheck.DeepVerdict, with --deep

    @property
    def valid(self) -> bool:
        return self.report.valid

    def fix_commands(self) -> list[str]:
        return [f"ds-wizard fix {shlex.quote(str(self.config))} {self.world.flags} {s}"
                for s in self.report.suggestions]

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` object."""
        data = self.report.to_dict()
        data.update(memory=self.memory, config=str(self.config),
                    total_ranks=self.world.total_ranks, world_size_source=self.world.source,
                    deep=self.deep.to_dict() if self.deep else None,
                    fix_commands=self.fix_commands())
        if self.filled:
            f = self.filled
            data["hf"] = {"filled": f.filled, "mismatches": f.mismatches,
                          "left_auto": f.left_auto, "error": f.error}
        return data

    def lines(self) -> list[str]:
        """The text report; the first line is the verdict on its own."""
        report, where = self.report, f"{self.config} for {self.world.describe()}"
        if report.valid and report.strict is False and report.warnings:
            lines = [f"✅ VALID (with warnings): {where}: {report.formula}"]
        elif report.valid:
            lines = [f"✅ VALID: {where}: {report.formula}"]
        else:
            lines = [f"❌ INVALID: {where}: {report.headline}"]
        lines += _triplet_lines(report)
        if report.deepspeed_error:
            lines.append(f"  DeepSpeed {report.deepspeed_version} stops with: "
                         f"{report.deepspeed_error}")
        else:
            lines.append(f"  DeepSpeed {report.deepspeed_version}: accepts this config")
        # the batch verdict is already shown above; list the other problems
        shown = report.deepspeed_error or ""
        others = [e for e in report.errors
                  if not (shown and (e == shown.partition(": ")[2] or e.endswith(shown)))]
        if others:
            lines += ["errors:", *(f"  ✗ {e}" for e in others)]
        if report.warnings:
            lines += ["warnings:", *(f"  ⚠ {w}" for w in report.warnings)]
        lines += _hf_lines(self.filled)
        if report.suggestions:
            lines += ["to repair the batch triplet, run one of:",
                      *(f"  {c}" for c in self.fix_commands())]
        if self.deep:
            lines.append(f"  deep check: {self.deep.line()}")
        return lines


def _triplet_lines(report: CheckReport) -> list[str]:
    lines = []
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu",
                "gradient_accumulation_steps"):
        value, raw = getattr(report, key), report.written.get(key)
        if (raw is not None and raw != value) or isinstance(raw, (bool, float, str)):
            note = f"  (written as {json.dumps(raw)})"
        elif key in report.derived:
            note = "  (derived by DeepSpeed)"
        else:
            note = ""
        lines.append(f"  {key:<31} {'-' if value is None else value}{note}")
    if report.formula:
        needed = ""
        m, g = report.train_micro_batch_size_per_gpu, report.gradient_accumulation_steps
        if "!=" in report.formula and m and g and m > 0 and g > 0:
            needed = f"  (micro × accumulation × world size = {m * g * report.world_size})"
        label = "formula"
        if (report.deepspeed_error or "").startswith("TypeError"):
            label = "formula, once they are numbers"
        lines.append(f"  {label:<31} {report.formula}{needed}")
    return lines


def _hf_lines(filled: HfFill | None) -> list[str]:
    if filled is None:
        return []
    lines = []
    if filled.filled:
        lines.append("HF Trainer fills: " + ", ".join(
            f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in filled.filled.items()))
    if filled.left_auto:
        lines.append("HF Trainer fills later (from the model and the step count): "
                     + ", ".join(filled.left_auto))
    return lines


def hf_fill(cfg: dict[str, Any], hf: str | None, hf_args: Path | None,
            world_size: int) -> HfFill | None:
    """The config as the HF Trainer fills it, when --hf or --hf-args is given."""
    if hf is None and hf_args is None:
        return None
    return fill_like_trainer(cfg, parse_hf_args(hf, hf_args, world_size))


def check_file(config: Path, world: WorldSize, *, sp: int = 1, sp_flag: int | None = None,
               strict: bool = False, hf: str | None = None, hf_args: Path | None = None,
               spec: PresetSpec | None = None, gpu_memory: str | None = None,
               gpu_report: GpuInventory | None = None, deep: DeepCheck | None = None,
               settle: DeepCheck | None = None) -> FileCheck:
    """Judge ``config`` for ``world``; ``sp`` is the sequence-parallel degree (``sp_flag``
    when the user gave it, so the file's own key must agree). With ``spec``, the estimate
    is checked against ``gpu_memory`` (else the smallest GPU of ``gpu_report``, detected
    when not given). ``settle``: DeepSpeed's own verdict, run (without ``deep``) only when
    the config holds values the fast verdict does not mirror. A ConfigFileError when the
    file cannot be read."""
    cfg = load_config_file(config)
    base_world = world.data_parallel * sp  # DeepSpeed divides by sequence parallelism itself
    filled = hf_fill(cfg, hf, hf_args, world.data_parallel)
    checked = filled.config if filled else cfg
    report = check_config(checked, base_world, strict=strict, sequence_parallel=sp_flag)
    if filled and filled.error:
        # the Trainer stops before DeepSpeed ever sees the config
        report.errors.insert(0, filled.error.replace("\n", " "))
        report.valid = False
        report.deepspeed_error = None
    memory = None if spec is None else _memory_check(report, checked, world.data_parallel,
                                                     spec, gpu_memory, gpu_report)
    verdict = None
    if deep is not None:
        verdict = deep(checked, base_world)
        _defer_to_deepspeed(report, verdict, hf_error=bool(filled and filled.error))
    elif settle is not None:
        verdict = settle_unmirrored(report, checked, base_world, settle)
    report.valid = report.valid and not (strict and report.warnings)
    return FileCheck(config, report, world, filled, memory, verdict)


def settle_unmirrored(report: CheckReport, cfg: dict[str, Any], world_size: int,
                      deep: DeepCheck) -> Any:
    """The fast verdict made final: when ``cfg`` holds values it does not mirror
    (``report.unmirrored``) and it found nothing wrong, DeepSpeed's own verdict decides,
    and a warning says so. Returns that verdict, or None when the fast one stands."""
    if not report.unmirrored or not report.valid:
        return None
    verdict = deep(cfg, world_size)
    shown = "; ".join(report.unmirrored[:3])
    report.warnings.append(f"checked by DeepSpeed {verdict.deepspeed_version} itself: the "
                           f"fast check does not mirror {shown}")
    _defer_to_deepspeed(report, verdict, hf_error=False)
    return verdict


def _defer_to_deepspeed(report: CheckReport, deep: Any, hf_error: bool) -> None:
    """Where the schema and DeepSpeed's own parser disagree, DeepSpeed's word is final;
    ds-wizard's own rules (--sp vs the config, the HF Trainer's mismatch) still stand."""
    if not deep.accepted and report.valid:
        report.errors.append(f"{DEEPSPEED_VERDICT} {deep.error_type}: {deep.message}")
        report.deepspeed_error = f"{deep.error_type}: {deep.message}"
        report.valid = False
    elif deep.accepted and not report.valid and not hf_error:
        schema_only = [e for e in report.errors if e not in report.own_errors]
        report.warnings += [f"ds-wizard's schema refused this but DeepSpeed accepts it: {e}"
                            for e in schema_only]
        report.errors = list(report.own_errors)
        report.deepspeed_error = None
        report.valid = not report.errors


def _memory_check(report: CheckReport, cfg: dict[str, Any], world_size: int, spec: PresetSpec,
                  gpu_memory: str | None, gpu_report: GpuInventory | None
                  ) -> dict[str, Any] | None:
    """Add a warning to ``report`` when the config's estimate exceeds the GPU."""
    from ds_wizard.core.plan.fit import config_estimate, gpu_memory_from, memory_warning

    if gpu_memory is None and gpu_report is None:
        from ds_wizard.core.plan.gpus import detect_gpus

        gpu_report = detect_gpus()
    gpu = gpu_memory_from(gpu_memory, gpu_report)
    micro = report.train_micro_batch_size_per_gpu
    if gpu is None or not micro or micro < 1:
        why = "GPU memory unknown (pass --gpu-memory)" if gpu is None else "no usable micro-batch"
        report.warnings.append(f"memory not checked: {why}")
        return None
    est = config_estimate(cfg, spec, world_size, micro)
    warning = memory_warning(est, spec, gpu)
    if warning:
        report.warnings.append(warning)
    data = est.to_dict()
    data.update(gpu_memory=gpu.bytes, gpu_memory_source=gpu.source, fits=warning is None)
    return data
