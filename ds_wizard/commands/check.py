"""``ds-wizard check CONFIG``: DeepSpeed's verdict on a config file, before any launch."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import click

from ds_wizard.commands.check_options import (
    dumps_json,
    hf_fill,
    hf_options,
    sequence_parallel_flag,
    strict_option,
)
from ds_wizard.commands.worldsize import WorldSize, resolve_world_size, world_size_options
from ds_wizard.core.base.errors import ConfigFileError, ExitCode
from ds_wizard.core.check.checker import (
    CheckReport,
    check_config,
    load_config_file,
)
from ds_wizard.core.check.hfmode import HfFill


@click.command("check")
@click.argument("config", type=click.Path(path_type=Path), metavar="CONFIG")
@world_size_options
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report.")
@strict_option
@click.option("--deep", is_flag=True,
              help="Also run DeepSpeed's own DeepSpeedConfig on the file, in-process, with "
                   "the world size set (imports DeepSpeed: a few seconds).")
@hf_options
@click.option("--preset", "preset_ref", default=None, metavar="NAME|PATH",
              help="The model the config trains: adds a per-GPU memory check.")
@click.option("--gpu-memory", default=None, metavar="SIZE",
              help="Memory of one GPU for the memory check (80GiB, 24G). "
                   "Default: the smallest detected GPU.")
def check(config: Path, num_gpus: int | None, tp: int, pp: int, sp: int, as_json: bool,
          strict: bool = False, deep: bool = False, hf: str | None = None,
          hf_args: Path | None = None, preset_ref: str | None = None,
          gpu_memory: str | None = None) -> None:
    """Check a DeepSpeed config the way DeepSpeed will, without starting it.

    The verdict is DeepSpeed's own for the whole file, at the DeepSpeed version
    ds-wizard's schema was derived from: the batch triplet (with the resolved
    values and the formula), every key and value of the ZeRO, fp16/bf16,
    monitor and other blocks, removed keys, sequence_parallel_size. Files may
    have // comments and trailing commas, as DeepSpeed reads them with hjson.

    Where ds-wizard knows better than DeepSpeed it warns: keys DeepSpeed
    ignores, "auto" it silently turns into a default, numbers it accepts but
    should not. Warnings never change the exit status unless --strict.

    Exit status: 0 valid, 1 problems found, 2 usage error.

    \b
    Examples:
      ds-wizard check deepspeed_config.json --num-gpus 4
      ds-wizard check ds.json --num-gpus 16 --tp 2     # data-parallel size 8
      ds-wizard check ds.json --num-gpus 8 --strict --deep
      ds-wizard check ds_zero3_auto.json --num-gpus 4 --hf per_device_train_batch_size=4
      ds-wizard check ds.json --json | jq .errors
    """
    try:
        cfg = load_config_file(config)
    except ConfigFileError as exc:
        if not as_json:
            raise
        # scripts reading --json still get an object saying why
        click.echo(f"error: {exc.one_line()}", err=True)
        click.echo(dumps_json({"valid": False, "config": str(config),
                               "errors": [exc.one_line()], "warnings": []}))
        click.get_current_context().exit(ExitCode.PROBLEM)
    ws = resolve_world_size(num_gpus, tp, pp, sp)
    sp_flag = sequence_parallel_flag(sp)
    base_world = ws.data_parallel * sp  # DeepSpeed divides by sequence parallelism itself
    filled = hf_fill(cfg, hf, hf_args, ws.data_parallel)
    checked = filled.config if filled else cfg
    report = check_config(checked, base_world, strict=strict, sequence_parallel=sp_flag)
    if filled and filled.error:
        # the Trainer stops before DeepSpeed ever sees the config
        report.errors.insert(0, filled.error.replace("\n", " "))
        report.valid = False
        report.deepspeed_error = None
    memory = _memory_check(report, checked, ws.data_parallel, preset_ref, gpu_memory)
    deep_verdict = None
    if deep:
        from ds_wizard.deepcheck import deep_check, defer_to_deepspeed

        deep_verdict = deep_check(checked, base_world)
        defer_to_deepspeed(report, deep_verdict, hf_error=bool(filled and filled.error))
    elif report.unmirrored:
        from ds_wizard.deepcheck import settle

        deep_verdict = settle(report, checked, base_world)
    report.valid = report.valid and not (strict and report.warnings)
    if as_json:
        data = report.to_dict()
        data["memory"] = memory
        data["config"] = str(config)
        data["total_ranks"] = ws.total_ranks
        data["world_size_source"] = ws.source
        data["deep"] = deep_verdict.to_dict() if deep_verdict else None
        data["fix_commands"] = [f"ds-wizard fix {shlex.quote(str(config))} {ws.flags} {s}"
                                for s in report.suggestions]
        if filled:
            data["hf"] = {"filled": filled.filled, "mismatches": filled.mismatches,
                          "left_auto": filled.left_auto, "error": filled.error}
        click.echo(dumps_json(data))
    else:
        for line in render_check(report, config, ws, filled):
            click.echo(line)
        if deep_verdict:
            click.echo(f"  deep check: {deep_verdict.line()}")
    click.get_current_context().exit(ExitCode.OK if report.valid else ExitCode.PROBLEM)


def render_check(report: CheckReport, config: Path, ws: WorldSize,
                 filled: HfFill | None = None) -> list[str]:
    """The text report; the first line is the verdict on its own."""
    if report.valid and report.strict is False and report.warnings:
        lines = [f"✅ VALID (with warnings): {config} for {ws.describe()}: {report.formula}"]
    elif report.valid:
        lines = [f"✅ VALID: {config} for {ws.describe()}: {report.formula}"]
    else:
        lines = [f"❌ INVALID: {config} for {ws.describe()}: {report.headline}"]
    triplet = (
        ("train_batch_size", report.train_batch_size),
        ("train_micro_batch_size_per_gpu", report.train_micro_batch_size_per_gpu),
        ("gradient_accumulation_steps", report.gradient_accumulation_steps),
    )
    for key, value in triplet:
        raw = report.written.get(key)
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
        lines.append("errors:")
        lines += [f"  ✗ {e}" for e in others]
    if report.warnings:
        lines.append("warnings:")
        lines += [f"  ⚠ {w}" for w in report.warnings]
    if filled is not None:
        if filled.filled:
            lines.append("HF Trainer fills: " + ", ".join(
                f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in filled.filled.items()))
        if filled.left_auto:
            lines.append("HF Trainer fills later (from the model and the step count): "
                         + ", ".join(filled.left_auto))
    if report.suggestions:
        lines.append("to repair the batch triplet, run one of:")
        lines += [f"  ds-wizard fix {shlex.quote(str(config))} {ws.flags} {s}"
                  for s in report.suggestions]
    return lines


def _memory_check(report: CheckReport, cfg: dict, world_size: int, preset_ref: str | None,
                  gpu_memory: str | None) -> dict | None:
    """With --preset: add a warning to ``report`` when the config's estimate exceeds the GPU."""
    if preset_ref is None:
        if gpu_memory is not None:
            raise click.UsageError("--gpu-memory needs --preset (the model to estimate)")
        return None
    from ds_wizard.commands.common import resolve_preset
    from ds_wizard.core.plan.fit import config_estimate, gpu_memory_from, memory_warning

    spec = resolve_preset(preset_ref).spec
    report_gpus = None
    if gpu_memory is None:
        from ds_wizard.core.plan.gpus import detect_gpus

        report_gpus = detect_gpus()
    gpu = gpu_memory_from(gpu_memory, report_gpus)
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
