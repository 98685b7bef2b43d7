"""``ds-wizard plan``: the per-GPU memory breakdown for a preset, before anything is launched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ds_wizard.commands.common import preset_options, renamed_option, resolve_preset
from ds_wizard.commands.numbers import Count, FiniteFloat
from ds_wizard.core.base.defaults import HEADROOM
from ds_wizard.core.base.errors import DsWizardError, ExitCode
from ds_wizard.core.base.limits import MAX_MICRO_BATCH, MAX_WORLD_SIZE
from ds_wizard.core.base.text import json_text
from ds_wizard.core.batch.topology import resolve_topology
from ds_wizard.core.plan.backends import BACKENDS
from ds_wizard.core.plan.fit import (
    DoesNotFit,
    check_headroom,
    choose_fit,
    gib,
    gpu_memory_from,
)
from ds_wizard.core.plan.memory import PRECISIONS, estimate, largest_micro_batch
from ds_wizard.core.plan.params import count_params, human_count

PARTS = ("params", "grads", "optimizer", "activations", "logits", "overhead")


@click.command("plan")
@preset_options()
@click.option("--num-gpus", type=Count(MAX_WORLD_SIZE), default=None, metavar="N",
              help="GPUs (ranks) in total over all nodes.")
@click.option("--num-nodes", "--nodes", "nodes", type=Count(MAX_WORLD_SIZE), default=None,
              metavar="N",
              help="Nodes the GPUs are spread over (affects the CPU-RAM figure for offload; "
                   "with --hostfile: its first N hosts). Default: 1.")
@click.option("--gpus-per-node", type=Count(MAX_WORLD_SIZE), default=None, metavar="G",
              help="GPUs on each node (instead of the --num-gpus total).")
@click.option("--hostfile", type=click.Path(path_type=Path, dir_okay=False), default=None,
              metavar="FILE", help="DeepSpeed hostfile (`host slots=N` lines).")
@click.option("--gpu-memory", default=None, metavar="SIZE",
              help="Memory of one GPU: 80GiB, 80GB, 24G. Default: the smallest detected GPU.")
@renamed_option("--micro", "--micro-batch", "micro", type=Count(MAX_MICRO_BATCH),
                help="Micro-batch per GPU. Default: the preset's for this GPU count.")
@renamed_option("--zero", "--zero-stage", "zero", type=Count(3, low=0),
                help="ZeRO stage. Default: the preset's.")
@click.option("--offload-optimizer", type=click.Choice(["none", "cpu", "nvme"]), default=None,
              help="Optimizer offload. Default: the preset's.")
@click.option("--offload-param", type=click.Choice(["none", "cpu", "nvme"]), default=None,
              help="Parameter offload (ZeRO-3). Default: the preset's.")
@click.option("--precision", type=click.Choice(["auto", *PRECISIONS]), default="auto",
              show_default=True, help="auto: the preset's, bf16 where supported.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="mamba_ssm: the CUDA kernels; transformers: its pure-PyTorch path; auto: "
                   "what a launch here would run (mamba_ssm when planning for another "
                   "machine).")
@click.option("--checkpointing/--no-checkpointing", default=None,
              help="Activation checkpointing. Default: the preset's.")
@click.option("--headroom", type=FiniteFloat(0, 1, low_open=True), default=HEADROOM,
              show_default=True,
              help="Plan to this fraction of GPU memory.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable plan.")
def plan(preset_ref: str | None, sets: tuple[str, ...], num_gpus: int | None,
         nodes: int | None, gpus_per_node: int | None, hostfile: Path | None,
         gpu_memory: str | None, micro: int | None, zero: int | None,
         offload_optimizer: str | None, offload_param: str | None, precision: str,
         backend: str, checkpointing: bool | None, headroom: float, as_json: bool) -> None:
    """Per-GPU memory for a preset: params, grads, optimizer, activations, logits, overhead.

    Also shows the largest micro-batch that fits and the cheapest ZeRO stage or offload
    that fits. Estimates only; nothing is launched.

    Exit status: 0 the plan fits, 1 it does not fit (or bad input), 2 usage error.

    \b
    Examples:
      ds-wizard plan --preset 7b_mamba --num-gpus 8 --gpu-memory 80GiB
      ds-wizard plan --preset mamba_1.4b --num-gpus 1 --gpu-memory 24G --micro-batch 4 --json
    """
    if preset_ref is None:
        raise click.UsageError("--preset is required (see `ds-wizard presets`)")
    check_headroom(headroom)
    if num_gpus is None and gpus_per_node is None and hostfile is None:
        raise click.UsageError("give --num-gpus N (the total), --gpus-per-node G or "
                               "--hostfile FILE")
    topo = resolve_topology(num_gpus=num_gpus, num_nodes=nodes, gpus_per_node=gpus_per_node,
                            hostfile=hostfile)
    num_gpus, nodes = topo.data_parallel, topo.nodes
    preset = resolve_preset(preset_ref, sets)
    spec = preset.spec
    report = None
    if gpu_memory is None:
        from ds_wizard.core.plan.gpus import detect_gpus

        report = detect_gpus()
    gpu = gpu_memory_from(gpu_memory, report)
    if gpu is None:
        raise DsWizardError(f"GPU memory unknown: no GPU detected ({report.reason})"
                            if report else "GPU memory unknown",
                            "pass --gpu-memory, e.g. --gpu-memory 80GiB")
    from ds_wizard.core.plan.backends import resolve_backend

    here = report is not None and report.count > 0
    decision = resolve_backend(
        backend, cuda=True, arch=spec.model.arch, here=here,
        compute_capability=min(g.compute_capability for g in report.gpus) if here else None)
    backend = decision.name
    settings: dict[str, Any] = {
        "world_size": num_gpus, "gpus_per_node": topo.gpus_per_node, "backend": backend,
        "precision": precision, "activation_checkpointing": checkpointing,
        "bf16_supported": report.bf16_supported if report else None,
    }
    # None leaves the preset's choice; estimate() refuses offload the stage cannot carry
    chosen = dict(settings, zero_stage=zero,
                  offload_optimizer=None if offload_optimizer is None
                  else offload_optimizer != "none",
                  offload_param=None if offload_param is None else offload_param != "none")
    est = estimate(spec, micro_batch=micro, **chosen)
    largest = largest_micro_batch(spec, gpu.bytes, headroom, **chosen)
    fit_settings = {k: v for k, v in settings.items() if k != "world_size"}
    try:
        cheapest = choose_fit(spec, num_gpus, gpu, headroom=headroom,
                              micro_batch=est.settings.micro_batch, from_stage=0,
                              **fit_settings)
        cheapest_text = (f"{cheapest.strategy.label} fits micro-batch "
                         f"{est.settings.micro_batch} ({gib(cheapest.estimate.total)})")
        no_fit = None
    except DoesNotFit as exc:
        cheapest, cheapest_text = None, None
        no_fit = exc.message + (
            ("; would fit with: " + "; ".join(exc.advice)) if exc.advice else "")

    usable = gpu.usable(headroom)
    if as_json:
        data = {
            "preset": preset.name, "params": count_params(spec.model),
            "gpu_memory": gpu.bytes, "gpu_memory_source": gpu.source, "headroom": headroom,
            "usable": usable, "fits": est.fits(gpu.bytes, headroom),
            "estimate": est.to_dict(), "largest_micro_batch": largest,
            "cheapest_fit": None if cheapest is None else {
                "zero_stage": cheapest.strategy.zero_stage,
                "offload_optimizer": cheapest.strategy.offload_optimizer,
                "offload_param": cheapest.strategy.offload_param,
                "micro_batch": est.settings.micro_batch,
                "total": cheapest.estimate.total,
            },
            "does_not_fit": no_fit,
            "backend_reason": decision.reason,
        }
        click.echo(json_text(data))
        click.get_current_context().exit(ExitCode.OK if data["fits"] else ExitCode.PROBLEM)
    s = est.settings
    offload = [w for w, on in (("optimizer", s.offload_optimizer),
                               ("params", s.offload_param)) if on]
    click.echo(f"Memory plan: {preset.name} ({spec.model.arch}, "
               f"{human_count(count_params(spec.model))} params), seq_len {s.seq_len}, "
               f"micro-batch {s.micro_batch}")
    click.echo(f"{num_gpus} GPU(s) on {nodes} node(s), ZeRO-{s.zero_stage}"
               + (f" + {' and '.join(offload)} offload" if offload else "")
               + f", {s.precision}, backend {s.backend}, activation checkpointing "
               + ("on" if s.activation_checkpointing else "off"))
    click.echo(f"backend {s.backend}: {decision.reason}")
    click.echo("")
    click.echo(f"  {'':<14}{'per GPU':>12}")
    for part in PARTS:
        click.echo(f"  {part:<14}{gib(getattr(est, part)):>12}")
    click.echo(f"  {'total':<14}{gib(est.total):>12}")
    verdict = "fits" if est.fits(gpu.bytes, headroom) else "DOES NOT FIT"
    click.echo(f"  {'GPU memory':<14}{gib(gpu.bytes):>12}  ({gpu.source})")
    click.echo(f"  {'usable':<14}{gib(usable):>12}  ({headroom:.0%}); headroom "
               f"{gib(usable - est.total)}: {verdict}")
    if est.cpu_per_node and offload:
        click.echo(f"  {'CPU per node':<14}{gib(est.cpu_per_node):>12}  (DeepSpeed's estimate)")
    click.echo("")
    click.echo(f"Largest micro-batch that fits: {largest or 'none (not even 1)'} "
               f"(ZeRO-{s.zero_stage}" + (f" + {' and '.join(offload)} offload" if offload
                                         else "") + ")")
    if cheapest_text:
        click.echo(f"Cheapest setting that fits: {cheapest_text}")
    else:
        click.echo(f"Nothing fits: {no_fit}")
    # scripts: `ds-wizard plan ... && launch` must not go on with a plan that does not fit
    fits = est.fits(gpu.bytes, headroom)
    click.get_current_context().exit(ExitCode.OK if fits else ExitCode.PROBLEM)
