"""``ds-wizard generate``: one DeepSpeed config per GPU count, and the table of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import click

from ds_wizard.commands.common import (
    monitor_option,
    preset_options,
    resolve_preset,
    with_monitor,
)
from ds_wizard.commands.numbers import Count, parse_gpu_counts
from ds_wizard.core.base.defaults import RUNS_DIR
from ds_wizard.core.base.errors import WriteError
from ds_wizard.core.base.fsio import FileChange, write_all
from ds_wizard.core.base.limits import MAX_WORLD_SIZE
from ds_wizard.core.presets.lookup import DEFAULT_PRESET
from ds_wizard.core.presets.schema import Precision

TABLE_HEADERS = ("GPUs", "micro_batch", "grad_acc", "train_batch_size", "config file")


def config_filename(num_gpus: int) -> str:
    return f"deepspeed_{num_gpus}gpu.json"


def render_table(rows: list[tuple[int, int, int, int, str]]) -> list[str]:
    """The source document's markdown table: each cell padded to its header's width."""
    widths = [len(h) for h in TABLE_HEADERS]

    def line(cells: tuple[object, ...]) -> str:
        padded = (f" {str(c).ljust(w)} " for c, w in zip(cells, widths, strict=True))
        return "|" + "|".join(padded) + "|"

    out = [line(TABLE_HEADERS), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in rows]
    return out


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
@click.option("--num-nodes", type=Count(MAX_WORLD_SIZE), default=None, metavar="N",
              help="Nodes the GPUs are spread over: each --gpus count is the total and must "
                   "split evenly (with --hostfile: its first N hosts).")
@click.option("--gpus-per-node", type=Count(MAX_WORLD_SIZE), default=None, metavar="G",
              help="GPUs on each node, instead of --gpus (needs --num-nodes or --hostfile).")
@click.option("--hostfile", type=click.Path(path_type=Path, dir_okay=False), default=None,
              metavar="FILE",
              help="DeepSpeed hostfile: one config for its nodes, and a run prepared with "
                   "launch_deepspeed.sh (`deepspeed --hostfile …`) copied to --out-dir.")
@click.option("--slurm", is_flag=True,
              help="With --num-nodes: also prepare a run and write launch_slurm.sbatch "
                   "(the hostfile comes from SLURM_JOB_NODELIST).")
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
    or none is: each is staged first, then renamed into place.

    \b
    Examples:
      ds-wizard generate --preset 7b_mamba --gpus 1,2,4,8
      ds-wizard generate --preset mamba_1.4b --gpus 8,16 --out-dir configs/
      ds-wizard generate --preset tiny_mamba --gpus 2 --set batch.micro_batch=2
      ds-wizard generate --preset mamba_1.4b --hostfile hosts       # + launch_deepspeed.sh
      ds-wizard generate --preset mamba_1.4b --num-nodes 2 --gpus-per-node 8 --slurm
    """
    # imported here: the config builder and memory model are not needed for --help
    from ds_wizard.core.batch.topology import resolve_topology
    from ds_wizard.core.config.auto import auto_configure
    from ds_wizard.core.config.dsconfig import dumps

    sets = with_monitor(sets, monitor)
    preset = resolve_preset(preset_ref, sets)
    if not out_dir.is_dir():
        raise WriteError(f"output directory {out_dir} does not exist",
                         "create it first, or pass an existing --out-dir")
    if slurm and not (num_nodes or hostfile):
        raise click.UsageError("--slurm needs --num-nodes N (and --gpus-per-node G)")
    one_layout = hostfile is not None or gpus_per_node is not None
    if one_layout:
        if ctx.get_parameter_source("gpu_counts") != click.core.ParameterSource.DEFAULT:
            raise click.UsageError("--gpus lists totals; with --hostfile or --gpus-per-node "
                                   "the nodes decide the count, so drop --gpus")
        topologies = [resolve_topology(num_nodes=num_nodes, gpus_per_node=gpus_per_node,
                                       hostfile=hostfile)]
    else:
        topologies = [resolve_topology(num_gpus=n, num_nodes=num_nodes) for n in gpu_counts]
    if slurm and len(topologies) > 1:
        raise click.UsageError("--slurm prepares one run: give one --gpus total (or "
                               "--gpus-per-node)")
    results = []
    for topo in topologies:
        results.append((topo.data_parallel, auto_configure(
            preset, topo.data_parallel, precision=precision, zero_stage=zero_stage)))
    rows = []
    for n, result in results:
        c = result.choice
        rows.append((n, c.micro_batch, c.grad_accum, c.global_batch, config_filename(n)))
    changes = write_all([(out_dir / config_filename(n), dumps(result.config))
                         for n, result in results])
    script_lines: list[str] = []
    if topologies[0].multi_node and (hostfile is not None or slurm):
        script_lines = _prepare_scripts(
            preset_ref, sets, out_dir / rows[0][4], out_dir, runs_dir, num_nodes=num_nodes,
            gpus_per_node=gpus_per_node, hostfile=hostfile, slurm=slurm,
            num_gpus=None if hostfile else topologies[0].total_ranks)
    if as_json:
        for line in script_lines:
            click.echo(line, err=True)
        click.echo(json.dumps([
            {"gpus": n, "train_micro_batch_size_per_gpu": m, "gradient_accumulation_steps": g,
             "train_batch_size": t, "file": str(out_dir / f), "changed": ch.changed,
             "backup": str(ch.backup) if ch.backup else None}
            for (n, m, g, t, f), ch in zip(rows, changes, strict=True)
        ], indent=2, ensure_ascii=False))
        return
    click.echo(f"Preset: {preset.name} ({preset.source})")
    click.echo("")
    for line in render_table(rows):
        click.echo(line)
    click.echo("")
    for line in change_lines(changes):
        click.echo(line)
    for line in script_lines:
        click.echo(line)


def change_lines(changes: list[FileChange]) -> list[str]:
    """Exactly which files changed: one line each, then the count."""
    lines = []
    for ch in changes:
        if not ch.changed:
            lines.append(f"unchanged {ch.path} (already holds this config)")
        elif ch.created:
            lines.append(f"created   {ch.path}")
        else:
            lines.append(f"updated   {ch.path} (previous version: {ch.backup})")
    written = sum(ch.changed for ch in changes)
    lines.append(f"wrote {written} of {len(changes)} file(s)"
                 + (f", {len(changes) - written} already up to date" if written < len(changes)
                    else ""))
    return lines


def _prepare_scripts(preset_ref: str, sets: tuple[str, ...], config: Path, out_dir: Path,
                     runs_dir: str, **nodes: object) -> list[str]:
    """A run prepared (not started) with the config just written; its scripts to out_dir."""
    from ds_wizard.core.base.fsio import atomic_write_text
    from ds_wizard.launch.plan import LaunchRequest, prepare_run, scripts_text

    plan = prepare_run(LaunchRequest(preset_ref, sets=sets, config_path=config,
                                     runs_dir=runs_dir, **nodes))  # type: ignore[arg-type]
    scripts = [plan.paths.script] + ([plan.sbatch] if plan.sbatch is not None else [])
    for script in scripts:
        copy = out_dir / script.name
        atomic_write_text(copy, script.read_text(encoding="utf-8"))
        copy.chmod(0o755)
    return ["", *scripts_text(plan)[-2:],
            f"📝 copied {', '.join(s.name for s in scripts)} to {out_dir}"]
