"""``ds-wizard launch``: parse the flags, then :mod:`ds_wizard.launch.session` validates,
creates the run directory, starts DeepSpeed under its supervisor and follows it."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ds_wizard.commands.common import (
    Decorator,
    monitor_option,
    preset_options,
    resolve_preset,
    with_monitor,
)
from ds_wizard.commands.numbers import Count, FiniteFloat
from ds_wizard.commands.worldsize import node_options
from ds_wizard.core.base.defaults import GRACE_S, HEADROOM, RUNS_DIR
from ds_wizard.core.base.limits import MAX_GLOBAL_BATCH, MAX_STEPS, MAX_WORLD_SIZE
from ds_wizard.core.plan.backends import BACKENDS, DEFAULT_BACKEND

if TYPE_CHECKING:
    from ds_wizard.launch.plan import LaunchRequest

#: Every option of ``launch``, declared once, in --help order. A new option is one more
#: entry here and, unless the command itself uses it (--detach, --grace), a field of
#: ``LaunchRequest`` of the same name: the command passes the rest through unchanged.
LAUNCH_OPTIONS: tuple[Decorator, ...] = (
    preset_options(),
    click.option("--num-gpus", type=Count(MAX_WORLD_SIZE), default=None,
                 help="Ranks to start over all nodes (default: every visible GPU; 2 CPU ranks "
                      "without a GPU)."),
    click.option("--gpus", default=None, metavar="LIST",
                 help="The GPUs to train on, as CUDA_VISIBLE_DEVICES lists them: 2,0 or "
                      "GPU-<uuid>,… or MIG-<uuid>; rank i runs on the i-th. Default: "
                      "CUDA_VISIBLE_DEVICES, else every GPU."),
    click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
                 metavar="FILE", help="Use this DeepSpeed JSON; it must pass `ds-wizard check`."),
    click.option("--data", default=None, metavar="PATH",
                 help=".txt, .jsonl (text field), pre-tokenized .bin, or a directory "
                      "(default: the embedded Python-stdlib corpus)."),
    click.option("--data-dtype", type=click.Choice(["uint16", "uint32"]), default=None,
                 help="Token dtype of a .bin file (default: by vocabulary size)."),
    click.option("--tokenizer", default=None, metavar="FILE",
                 help="A local HF tokenizer.json (default: bytes, vocabulary 256)."),
    click.option("--steps", type=Count(MAX_STEPS), default=None,
                 help="Train up to this step (default: the preset's total_steps)."),
    click.option("--resume", default=None, metavar="RUN",
                 help="Continue a run from its latest complete checkpoint: a run's name, a "
                      "unique prefix of one, its directory, or `latest`."),
    click.option("--global-batch", type=Count(MAX_GLOBAL_BATCH), default=None,
                 help="With --resume on another number of ranks: train with this global "
                      "batch when the run's own cannot be split over them (the LR schedule "
                      "stays as it was)."),
    click.option("--gpu-memory", default=None, metavar="SIZE",
                 help="Memory of one GPU (80GiB, 80GB, 24G) the batch is fitted to, as with "
                      "--auto. Default: the smallest detected GPU; with neither, the preset's "
                      "batch is used as is."),
    click.option("--headroom", type=FiniteFloat(0, 1, low_open=True), default=HEADROOM,
                 show_default=True, help="Plan to this fraction of GPU memory."),
    click.option("--runs-dir", default=RUNS_DIR, show_default=True, metavar="DIR"),
    click.option("--backend", type=click.Choice(BACKENDS), default=DEFAULT_BACKEND,
                 show_default=True),
    click.option("--grace", type=FiniteFloat(0, 86400), default=GRACE_S, show_default=True,
                 metavar="SECONDS",
                 help="On Ctrl-C, how long the ranks get to checkpoint before being killed."),
    click.option("--dry-run", is_flag=True, help="Validate and print the summary; start nothing."),
    node_options(slurm="Write an sbatch script for --num-nodes N (it builds the hostfile from "
                      "SLURM_JOB_NODELIST); start nothing here."),
    click.option("--doctor/--no-doctor", default=True,
                 help="Run the doctor's fast checks (kernels, ops, host RAM, disk), which "
                      "refuse a launch before any rank starts (see `ds-wizard doctor`); "
                      "--no-doctor skips them."),
    click.option("--master-addr", default=None, metavar="ADDR",
                 help="Multi-node: the address every node reaches rank 0 at (default: the "
                      "hostfile's first host)."),
    monitor_option,
    click.option("--stall-after", default=None, metavar="RULE",
                 help="Call the run stalled when no rank progressed for max(K × median step "
                      "time, FLOOR): 10x, 90s, 10x,5m, or off. Default 10x,60s on CPU ranks, "
                      "10x,300s on GPUs."),
    click.option("--on-stall", type=click.Choice(["wait", "stop"]), default="wait",
                 show_default=True,
                 help="On a stall, once the stacks are saved: keep waiting, or end the run."),
    click.option("--detach", is_flag=True,
                 help="Start the run and return at once, printing its name (follow it with "
                      "`ds-wizard attach NAME`)."),
)


def launch_options(fn: Any) -> Any:
    for option in reversed(LAUNCH_OPTIONS):
        fn = option(fn)
    return fn


@click.command("launch")
@launch_options
@click.pass_context
def launch(ctx: click.Context, detach: bool, grace: float, **fields: Any) -> None:
    """Train a preset under DeepSpeed, in runs/<preset>-<time>/.

    The run lives under its own supervisor process, not under this terminal. This
    command follows its log; Ctrl-C (or SIGTERM) stops the run gracefully: the ranks
    save a checkpoint, then anything still alive after --grace seconds is killed.
    Closing the terminal (SIGHUP) only detaches: the run goes on; come back with
    `ds-wizard attach NAME`, list runs with `ds-wizard runs`, stop with `ds-wizard stop`.
    Resume with `ds-wizard launch --resume latest`; with --num-gpus (or --num-nodes,
    --hostfile) another number of ranks continues it: the checkpoint is converted with
    DeepSpeed's ds_to_universal and the same global batch is split anew
    (docs/checkpoints.md).

    Exit status: 0 finished (or detached), 1 refused or failed (a failing disk too),
    2 usage error, 128+N after a stop by signal N (130 for Ctrl-C), the rank's own
    code when training failed.

    \b
    Examples:
      ds-wizard launch --preset tiny_mamba --steps 40        # CPU demo, 2 ranks
      ds-wizard launch --preset 7b_mamba --num-gpus 8 --dry-run
      ds-wizard launch --preset mamba_130m --set train.lr=3e-4 --data corpus.jsonl
      ds-wizard launch --config deepspeed_4gpu.json --preset 7b_mamba --num-gpus 4
      ds-wizard launch --resume latest
      ds-wizard launch --resume latest --num-gpus 1          # on fewer ranks
      ds-wizard launch --preset mamba_1.4b --hostfile hosts          # every node in hosts
      ds-wizard launch --preset mamba_1.4b --num-nodes 4 --gpus-per-node 8 --slurm
    """
    from ds_wizard.launch import session
    from ds_wizard.launch.client import start_supervisor

    request = launch_request(detach=detach, **fields)
    plan = session.plan_launch(request)
    preview = session.preview_text(plan, dry_run=request.dry_run)
    if preview is not None:
        click.echo(preview)
        return
    for line in session.start_lines(plan):
        click.echo(line)
    for line in watch_lines(plan):
        click.echo(line)
    watch = session.first_run_watch(plan, _echo)
    if detach:
        watch.stop()
        client = start_supervisor(plan, grace_s=grace, detach=True)
        for line in session.detached_lines(plan, client.pid):
            click.echo(line)
        return
    end = session.follow(plan, grace, watch, _echo)
    end.raise_if_failed()
    _echo(end.message, end.to_stderr)
    ctx.exit(end.exit_code)


def watch_lines(plan: Any) -> list[str]:
    """How to see the curves, and what the stall watch waits for (issue 22)."""
    from ds_wizard.core.config.monitor import view_commands

    lines = [f"📈 curves: {view}" for view in view_commands(plan.config)]
    if plan.stall is not None:
        lines.append(f"⏱  stall watch: stalled when no rank moves for "
                     f"{plan.stall.policy.describe()}; then {plan.stall.on_stall}")
    return lines


def launch_request(*, detach: bool, preset_ref: str | None, sets: tuple[str, ...],
                   monitor: str | None = None, **fields: Any) -> LaunchRequest:
    """The flags as a :class:`LaunchRequest`; usage errors before anything is read."""
    from ds_wizard.launch.plan import LaunchRequest

    if monitor is not None:
        if fields["resume"] is not None:
            raise click.UsageError("--resume keeps the run's trackers; drop --monitor")
        sets = with_monitor(sets, monitor)  # the preset's [monitor] trackers: one door
    if preset_ref is None and fields["resume"] is None:
        raise click.UsageError("give --preset NAME, or --resume RUN")
    if detach and fields["dry_run"]:
        raise click.UsageError("--detach starts a run; --dry-run starts nothing")
    if fields.get("global_batch") is not None and fields["resume"] is None:
        raise click.UsageError("--global-batch is for --resume on another number of ranks; "
                               "a new run takes --set batch.global_batch=N")
    if fields["resume"] is not None:  # prepare_run refuses --preset/--set on a resume
        # a conversion to a universal checkpoint prints its stages as it goes
        return LaunchRequest(preset_ref, sets=sets, progress=_echo, **fields)
    return LaunchRequest(resolve_preset(preset_ref, sets), **fields)  # --set applied


def _echo(text: str, err: bool = False) -> None:
    """Print, unless the terminal is gone (a hang-up): the run must not care."""
    with contextlib.suppress(OSError, ValueError):
        click.echo(text, err=err)
