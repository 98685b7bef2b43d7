"""The world-size flags every batch command shares, resolved by ``core.topology``.

``--num-gpus`` (the total), ``--num-nodes``, ``--gpus-per-node``, ``--hostfile`` and
``--tp/--pp/--sp`` → :func:`ds_wizard.core.batch.topology.resolve_topology` → the data-parallel
size the batch formula uses. The node flags are kept in ``ctx.meta`` rather than passed
as parameters, so a command adds them with one decorator and reads them back with
:func:`resolve_world_size`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ds_wizard.commands.numbers import Count
from ds_wizard.core.base.limits import MAX_WORLD_SIZE
from ds_wizard.core.batch.topology import (
    HostfileError,
    TopologyError,
    resolve_topology,
)
from ds_wizard.core.batch.world import WorldSize

META_KEY = "ds_wizard.topology_flags"


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    ctx.meta.setdefault(META_KEY, {})[param.name] = value
    return value


NODE_HELP = {
    "num_nodes": "Nodes the job spans (with --hostfile: its first N hosts).",
    "gpus_per_node": "GPUs (ranks) on each node.",
    "hostfile": "DeepSpeed hostfile (`host slots=N` per line): the nodes and their GPUs.",
}


def node_options(*, expose: bool = True, slurm: str | None = None, nodes_alias: bool = False,
                 **help_texts: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The one declaration of the node flags: ``--num-nodes``, ``--gpus-per-node``,
    ``--hostfile``, and ``--slurm`` when its help text is given.

    ``help_texts`` (``num_nodes=…``, ``gpus_per_node=…``, ``hostfile=…``) say what a flag
    means for one command; ``nodes_alias`` also accepts ``--nodes`` for ``--num-nodes``.
    ``expose=False``: the values go to ``ctx.meta`` for :func:`resolve_world_size` instead
    of the command's parameters.
    """
    extra: dict[str, Any] = {} if expose else {"expose_value": False, "callback": _remember}
    helps = {**NODE_HELP, **help_texts}
    names = ("--num-nodes", "--nodes") if nodes_alias else ("--num-nodes",)

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if slurm is not None:
            fn = click.option("--slurm", is_flag=True, help=slurm)(fn)
        fn = click.option("--hostfile", type=click.Path(path_type=Path, dir_okay=False),
                          default=None, metavar="FILE", help=helps["hostfile"], **extra)(fn)
        fn = click.option("--gpus-per-node", type=Count(MAX_WORLD_SIZE), default=None,
                          metavar="G", help=helps["gpus_per_node"], **extra)(fn)
        return click.option(*names, "num_nodes", type=Count(MAX_WORLD_SIZE), default=None,
                            metavar="N", help=helps["num_nodes"], **extra)(fn)

    return decorate


def world_size_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--num-gpus``, the node flags, plus ``--tp/--pp/--sp``."""
    for name, help_text in (
        ("--sp", "Sequence-parallel degree (Ulysses)."),
        ("--pp", "Pipeline-parallel degree."),
        ("--tp", "Tensor-parallel degree."),
    ):
        fn = click.option(name, type=Count(MAX_WORLD_SIZE), default=1, show_default=True,
                          help=help_text)(fn)
    fn = node_options(expose=False)(fn)
    return click.option(
        "--num-gpus", type=Count(MAX_WORLD_SIZE), default=None, metavar="N",
        help="Total GPUs (ranks) over all nodes. Default: the GPUs detected here.",
    )(fn)


def node_flags() -> dict[str, Any]:
    """The node flags of the running command (empty outside a click context)."""
    ctx = click.get_current_context(silent=True)
    return dict(ctx.meta.get(META_KEY, {})) if ctx is not None else {}


def resolve_world_size(num_gpus: int | None, tp: int = 1, pp: int = 1, sp: int = 1,
                       **nodes: Any) -> WorldSize:
    """Total ranks from the flags or NVML (else 1, said plainly), divided by tp × pp × sp."""
    flags = {k: v for k, v in {**node_flags(), **nodes}.items() if v is not None}
    detected, note = None, ""
    if num_gpus is None and "gpus_per_node" not in flags and "hostfile" not in flags:
        from ds_wizard.core.plan.gpus import detect_gpus

        report = detect_gpus()
        detected = report.count
        note = (f"assumed 1: no GPU detected ({report.reason}); "
                "pass --num-gpus N for the machine the job runs on")
    try:
        topo = resolve_topology(num_gpus=num_gpus, tp=tp, pp=pp, sp=sp, detected=detected,
                                default_ranks=1, default_note=note, **flags)
    except HostfileError:
        raise  # the file is wrong, not the command line: exit 1
    except TopologyError as exc:
        raise click.UsageError(exc.one_line()) from exc
    return WorldSize(topo.data_parallel, topo.total_ranks, topo.source, topo.flags(), topo)
