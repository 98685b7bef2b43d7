"""``ds-wizard --auto``: pick a complete config for a preset and a GPU count, and write it.

The options live on the top-level group (``ds-wizard --auto --num-gpus 4``) because the
source document's users type it that way; :func:`auto_options` adds them to ``main``
and :func:`run_auto` is what the group callback calls.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import click

from ds_wizard.commands.common import preset_options, resolve_preset, with_monitor
from ds_wizard.commands.numbers import Count, FiniteFloat
from ds_wizard.core.base.defaults import HEADROOM
from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.base.limits import (
    MAX_GLOBAL_BATCH,
    MAX_GRAD_ACCUM,
    MAX_MICRO_BATCH,
    MAX_WORLD_SIZE,
)
from ds_wizard.core.base.text import json_text
from ds_wizard.core.plan.backends import BACKENDS, DEFAULT_BACKEND, resolve_backend
from ds_wizard.core.presets.lookup import DEFAULT_PRESET
from ds_wizard.core.presets.schema import Precision

DEFAULT_OUTPUT = "deepspeed_config.json"
# Parameters that mean something only together with --auto.
AUTO_ONLY = ("num_gpus", "num_nodes", "gpus_per_node", "hostfile", "preset_ref", "sets",
             "output", "dry_run", "as_json", "precision",
             "micro_batch", "grad_accum", "global_batch", "zero_stage", "gpu_memory", "headroom",
             "backend", "monitor")


def auto_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--auto", "auto", is_flag=True,
                     help="Headless: choose a config for --preset and --num-gpus and write it."),
        click.option("--num-gpus", type=Count(MAX_WORLD_SIZE), default=None, metavar="N",
                     help="[--auto] GPUs (ranks) over all nodes. Default: the GPUs "
                          "detected here."),
        click.option("--num-nodes", type=Count(MAX_WORLD_SIZE), default=None, metavar="N",
                     help="[--auto] Nodes the job spans (with --hostfile: its first N)."),
        click.option("--gpus-per-node", type=Count(MAX_WORLD_SIZE), default=None, metavar="G",
                     help="[--auto] GPUs on each node."),
        click.option("--hostfile", type=click.Path(path_type=Path, dir_okay=False),
                     default=None, metavar="FILE",
                     help="[--auto] DeepSpeed hostfile (`host slots=N` lines)."),
        click.option("--output", "-o", type=click.Path(path_type=Path), default=DEFAULT_OUTPUT,
                     show_default=True, metavar="FILE",
                     help="[--auto] Where to write the config (old one kept as FILE.bak)."),
        click.option("--dry-run", is_flag=True, help="[--auto] Print the summary, write nothing."),
        click.option("--json", "as_json", is_flag=True,
                     help="[--auto] Print a machine-readable summary."),
        click.option("--precision", type=click.Choice(get_args(Precision)), default="auto",
                     show_default=True,
                     help="[--auto] auto: bf16 where the GPUs support it, else fp16."),
        click.option("--micro-batch", type=Count(MAX_MICRO_BATCH), default=None,
                     help="[--auto] Micro-batch per GPU instead of the preset's."),
        click.option("--grad-accum", type=Count(MAX_GRAD_ACCUM), default=None,
                     help="[--auto] Gradient accumulation steps."),
        click.option("--global-batch", type=Count(MAX_GLOBAL_BATCH), default=None,
                     help="[--auto] Target train_batch_size."),
        click.option("--zero-stage", type=Count(3, low=0), default=None,
                     help="[--auto] ZeRO stage instead of the preset's."),
        click.option("--gpu-memory", default=None, metavar="SIZE",
                     help="[--auto] Memory of one GPU (80GiB, 80GB, 24G). Default: the "
                          "smallest detected GPU; with neither, the preset's batch is used "
                          "as is."),
        click.option("--headroom", type=FiniteFloat(0, 1, low_open=True), default=HEADROOM,
                     show_default=True,
                     help="[--auto] Plan to this fraction of GPU memory."),
        click.option("--monitor", default=None, metavar="LIST",
                     help="[--auto] Trackers fed by DeepSpeed's monitor: tensorboard, csv, "
                          "wandb (comma-separated), or none. Default: the preset's."),
        click.option("--backend", type=click.Choice(BACKENDS),
                     default=DEFAULT_BACKEND, show_default=True,
                     help="[--auto] Kernels the memory estimate assumes. auto: what a "
                          "launch here would run (mamba_ssm when no GPU is here)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return preset_options(default=DEFAULT_PRESET)(fn)


def check_auto_usage(ctx: click.Context, params: dict[str, Any]) -> None:
    """Auto-only options without --auto, or --auto with a subcommand, are usage errors."""
    if params.get("auto"):
        if ctx.invoked_subcommand is not None:
            raise click.UsageError(f"--auto cannot be combined with the "
                                   f"{ctx.invoked_subcommand!r} command", ctx)
        return
    given = [
        name for name in AUTO_ONLY
        if ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)
    ]
    if given:
        flag = "--" + given[0].replace("_ref", "").replace("_", "-").replace("as-json", "json")
        example = "ds-wizard --auto --num-gpus 4" + ("" if flag == "--num-gpus" else f" {flag} ...")
        raise click.UsageError(f"{flag} only applies to --auto (e.g. {example})", ctx)


def run_auto(
    *, num_gpus: int | None, preset_ref: str, sets: tuple[str, ...], output: Path,
    dry_run: bool, as_json: bool, precision: str, micro_batch: int | None,
    grad_accum: int | None, global_batch: int | None, zero_stage: int | None,
    gpu_memory: str | None = None, headroom: float = HEADROOM,
    backend: str = DEFAULT_BACKEND, num_nodes: int | None = None,
    gpus_per_node: int | None = None, hostfile: Path | None = None,
    monitor: str | None = None, **_: Any,
) -> None:
    from ds_wizard.core.batch.topology import resolve_topology
    from ds_wizard.core.config.auto import auto_configure
    from ds_wizard.core.config.dsconfig import dumps
    from ds_wizard.core.plan.fit import gpu_memory_from
    from ds_wizard.core.plan.gpus import detect_gpus

    report = detect_gpus()
    if num_gpus is None and gpus_per_node is None and hostfile is None and not report.count:
        raise DsWizardError(f"no GPU detected ({report.reason})",
                            "pass --num-gpus N to write a config for the machine "
                            "that will run the job")
    topo = resolve_topology(num_gpus=num_gpus, num_nodes=num_nodes,
                            gpus_per_node=gpus_per_node, hostfile=hostfile,
                            detected=report.count)
    num_gpus = topo.data_parallel
    source = topo.describe() if topo.multi_node else topo.source
    preset = resolve_preset(preset_ref, with_monitor(sets, monitor))
    here = report.count > 0
    decision = resolve_backend(
        backend, cuda=True, arch=preset.spec.model.arch, here=here,
        compute_capability=min(g.compute_capability for g in report.gpus) if here else None)
    backend = decision.name
    from ds_wizard.core.plan.measured import here_entry

    # planning for this machine (no --gpu-memory): what `tune` measured here applies
    measured = here_entry(preset.spec, num_gpus, report) if gpu_memory is None else None
    result = auto_configure(
        preset, num_gpus, gpu_report=report, precision=precision, micro_batch=micro_batch,
        grad_accum=grad_accum, global_batch=global_batch, zero_stage=zero_stage,
        gpu_memory=gpu_memory_from(gpu_memory, report), headroom=headroom, backend=backend,
        measured=measured,
    )
    written, backup = False, None
    if not dry_run:
        from ds_wizard.core.base.fsio import write_if_changed

        written, backup = write_if_changed(output, dumps(result.config), backup=True)
    if as_json:
        data = result.to_dict()
        data["gpus_source"] = source
        data["output"] = None if dry_run else str(output)
        data["backup"] = str(backup) if backup else None
        data["backend_reason"] = decision.reason
        data["measured_here"] = measured.line() if measured is not None else None
        click.echo(json_text(data))
        return
    click.echo(f"Preset: {preset.name} ({preset.source}); GPUs: {source}")
    click.echo("")
    for line in result.summary():
        click.echo(line)
    click.echo("")
    click.echo("Why these numbers:")
    for reason in result.reasons:
        click.echo(f"  - {reason}")
    click.echo(f"  - memory planned for backend {backend}: {decision.reason}")
    if measured is not None and not any("measured here" in r for r in result.reasons):
        click.echo(f"  - {measured.line()} (not used: the batch values given win)")
    if result.memory is None and measured is None:
        click.echo("  - GPU memory unknown (no GPU detected, no --gpu-memory): the batch was "
                   "not checked against memory")
    if dry_run:
        click.echo(f"Dry run: nothing written (would write {output})")
    else:
        click.echo(f"Wrote {output}" + (f" (previous version: {backup})" if backup else "")
                   if written else f"{output} already holds this config; left as it is")
