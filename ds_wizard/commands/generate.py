"""``ds-wizard generate``: one DeepSpeed config per GPU count, and the table of them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, get_args

import click

from ds_wizard.commands.common import (
    monitor_option,
    preset_options,
    resolve_preset,
    with_monitor,
)
from ds_wizard.commands.numbers import Count, parse_gpu_counts
from ds_wizard.commands.render import echo_json, echo_lines
from ds_wizard.commands.worldsize import node_options
from ds_wizard.core.base.defaults import RUNS_DIR
from ds_wizard.core.presets.lookup import DEFAULT_PRESET
from ds_wizard.core.presets.schema import Precision

if TYPE_CHECKING:
    from ds_wizard.core.batch.topology import Topology


@click.command("generate")
@preset_options(default=DEFAULT_PRESET)
@click.option("--gpus", "gpu_counts", default="1,2,4,8", show_default=True,
              callback=parse_gpu_counts, metavar="N,N,...",
              help="Comma-separated GPU counts; one file per count.")
@click.option("--out-dir", type=click.Path(path_type=Path, file_okay=False), default=Path("."),
              show_default=True, help="Directory for the deepspeed_{N}gpu.json files.")
@click.option("--precision", type=click.Choice(get_args(Precision)), default="auto",
              show_default=True,
              help="auto: the preset's choice, bf16 where it says auto.")
@click.option("--zero-stage", type=Count(3, low=0), default=None,
              help="Override the preset's ZeRO stage.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@monitor_option
@node_options(
    num_nodes="Nodes the GPUs are spread over: each --gpus count is the total and must split "
              "evenly (with --hostfile: its first N hosts).",
    gpus_per_node="GPUs on each node, instead of --gpus (needs --num-nodes or --hostfile).",
    hostfile="DeepSpeed hostfile: one config for its nodes, and a run prepared with "
             "launch_deepspeed.sh (`deepspeed --hostfile …`) copied to --out-dir.",
    slurm="With --num-nodes: also prepare a run and write launch_slurm.sbatch (the hostfile "
          "comes from SLURM_JOB_NODELIST).")
@click.option("--runs-dir", default=RUNS_DIR, show_default=True, metavar="DIR",
              help="Where --hostfile/--slurm prepare the run directory.")
@click.pass_context
def generate(ctx: click.Context, preset_ref: str, sets: tuple[str, ...], gpu_counts: list[int],
             out_dir: Path, precision: str, zero_stage: int | None, as_json: bool,
             num_nodes: int | None, gpus_per_node: int | None, hostfile: Path | None,
             slurm: bool, runs_dir: str, monitor: str | None) -> None:
    """Write deepspeed_{N}gpu.json for each GPU count and print the table.

    Files are written for the given counts, not for this machine: no GPU
    detection is involved, so the output is the same everywhere. An existing
    file with different content is kept as FILE.bak. All the files are written,
    or none is: each is staged first, then renamed into place. --out-dir is
    created when it does not exist.

    \b
    Examples:
      ds-wizard generate --preset 7b_mamba --gpus 1,2,4,8
      ds-wizard generate --preset mamba_1.4b --gpus 8,16 --out-dir configs/
      ds-wizard generate --preset tiny_mamba --gpus 2 --set batch.micro_batch=2
      ds-wizard generate --preset mamba_1.4b --hostfile hosts       # + launch_deepspeed.sh
      ds-wizard generate --preset mamba_1.4b --num-nodes 2 --gpus-per-node 8 --slurm
    """
    # imported here: the config builder and memory model are not needed for --help
    from ds_wizard.core.config.generate import generate_configs

    topologies = _topologies(ctx, gpu_counts, num_nodes, gpus_per_node, hostfile, slurm)
    sets = with_monitor(sets, monitor)
    done = generate_configs(resolve_preset(preset_ref, sets), topologies, out_dir,
                            precision=precision, zero_stage=zero_stage)
    scripts: list[str] = []
    if topologies[0].multi_node and (hostfile is not None or slurm):
        from ds_wizard.launch.plan import LaunchRequest
        from ds_wizard.launch.scripts import prepare_scripts

        scripts = prepare_scripts(LaunchRequest(
            preset_ref, sets=sets, config_path=done.configs[0].file, runs_dir=runs_dir,
            num_nodes=num_nodes, gpus_per_node=gpus_per_node, hostfile=hostfile, slurm=slurm,
            num_gpus=None if hostfile else topologies[0].total_ranks), out_dir)
    if as_json:
        echo_lines(scripts, err=True)
        echo_json(done.as_list())
        return
    echo_lines([f"Preset: {done.preset} ({done.source})", "", *done.markdown_table(), "",
                *done.change_lines(), *scripts])


def _topologies(ctx: click.Context, gpu_counts: list[int], num_nodes: int | None,
                gpus_per_node: int | None, hostfile: Path | None, slurm: bool) -> list[Topology]:
    """One topology per --gpus total, or the one the node flags give; usage errors first."""
    from ds_wizard.core.batch.topology import resolve_topology

    if slurm and not (num_nodes or hostfile):
        raise click.UsageError("--slurm needs --num-nodes N (and --gpus-per-node G)")
    if hostfile is not None or gpus_per_node is not None:
        if ctx.get_parameter_source("gpu_counts") != click.core.ParameterSource.DEFAULT:
            raise click.UsageError("--gpus lists totals; with --hostfile or --gpus-per-node "
                                   "the nodes decide the count, so drop --gpus")
        return [resolve_topology(num_nodes=num_nodes, gpus_per_node=gpus_per_node,
                                 hostfile=hostfile)]
    if slurm and len(gpu_counts) > 1:
        raise click.UsageError("--slurm prepares one run: give one --gpus total (or "
                               "--gpus-per-node)")
    return [resolve_topology(num_gpus=n, num_nodes=num_nodes) for n in gpu_counts]
