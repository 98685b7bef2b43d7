"""``ds-wizard plan``: the per-GPU memory breakdown for a preset, before anything is launched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ds_wizard.commands.common import preset_options, renamed_option, resolve_preset
from ds_wizard.commands.numbers import Count, FiniteFloat
from ds_wizard.commands.render import echo_json, echo_lines, echo_table
from ds_wizard.commands.worldsize import node_options
from ds_wizard.core.base.defaults import HEADROOM
from ds_wizard.core.base.errors import ExitCode
from ds_wizard.core.base.limits import MAX_MICRO_BATCH, MAX_WORLD_SIZE
from ds_wizard.core.batch.topology import resolve_topology
from ds_wizard.core.plan.backends import BACKENDS
from ds_wizard.core.plan.memory import PRECISIONS
from ds_wizard.core.plan.report import memory_plan


@click.command("plan")
@preset_options()
@click.option("--num-gpus", type=Count(MAX_WORLD_SIZE), default=None, metavar="N",
              help="GPUs (ranks) in total over all nodes.")
@node_options(nodes_alias=True,
              num_nodes="Nodes the GPUs are spread over (affects the CPU-RAM figure for "
                        "offload; with --hostfile: its first N hosts). Default: 1.",
              gpus_per_node="GPUs on each node (instead of the --num-gpus total).",
              hostfile="DeepSpeed hostfile (`host slots=N` lines).")
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
         num_nodes: int | None, gpus_per_node: int | None, hostfile: Path | None,
         as_json: bool, **choices: Any) -> None:
    """Per-GPU memory for a preset: params, grads, optimizer, activations, logits, overhead.

    Also shows the largest micro-batch that fits and the cheapest ZeRO stage or offload
    that fits. Estimates only; nothing is launched.

    Exit status: 0 the plan fits, 1 it does not fit (or bad input), 2 usage error.

    \b
    Examples:
      ds-wizard plan --preset 7b_mamba --num-gpus 8 --gpu-memory 80GiB --micro-batch 2
      ds-wizard plan --preset mamba_1.4b --num-gpus 1 --gpu-memory 80GiB --micro-batch 4 --json
    """
    if preset_ref is None:
        raise click.UsageError("--preset is required (see `ds-wizard presets`)")
    if num_gpus is None and gpus_per_node is None and hostfile is None:
        raise click.UsageError("give --num-gpus N (the total), --gpus-per-node G or "
                               "--hostfile FILE")
    topo = resolve_topology(num_gpus=num_gpus, num_nodes=num_nodes,
                            gpus_per_node=gpus_per_node, hostfile=hostfile)
    result = memory_plan(resolve_preset(preset_ref, sets), topo, **choices)
    if as_json:
        echo_json(result.as_dict())
    else:
        echo_lines([*result.heading(), ""])
        echo_table(("", "per GPU", ""), result.table_rows(), justify=("left", "right"))
        echo_lines(["", *result.verdict_lines()])
    # scripts: `ds-wizard plan ... && launch` must not go on with a plan that does not fit
    click.get_current_context().exit(ExitCode.OK if result.fits else ExitCode.PROBLEM)
