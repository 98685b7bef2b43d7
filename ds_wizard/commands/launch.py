"""``ds-wizard launch``: validate, create the run directory, start DeepSpeed, supervise it."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ds_wizard.commands.common import monitor_option, preset_options, resolve_preset, with_monitor
from ds_wizard.commands.numbers import Count, FiniteFloat
from ds_wizard.commands.worldsize import node_options
from ds_wizard.core.base.defaults import GRACE_S, HEADROOM, RUNS_DIR
from ds_wizard.core.base.errors import DsWizardError, ExitCode
from ds_wizard.core.base.limits import MAX_STEPS, MAX_WORLD_SIZE
from ds_wizard.core.plan.backends import BACKENDS, DEFAULT_BACKEND


def node_options_exposed(fn: Any) -> Any:
    return node_options(fn, expose=True)


if TYPE_CHECKING:
    from ds_wizard.core.runs.first_step import FirstStepWatch
    from ds_wizard.launch.client import SupervisorClient
    from ds_wizard.launch.plan import PreparedRun


@click.command("launch")
@preset_options()
@click.option("--num-gpus", type=Count(MAX_WORLD_SIZE), default=None,
              help="Ranks to start over all nodes (default: every visible GPU; 2 CPU ranks "
                   "without a GPU).")
@click.option("--gpus", default=None, metavar="LIST",
              help="The GPUs to train on, as CUDA_VISIBLE_DEVICES lists them: 2,0 or "
                   "GPU-<uuid>,… or MIG-<uuid>; rank i runs on the i-th. Default: "
                   "CUDA_VISIBLE_DEVICES, else every GPU.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              metavar="FILE", help="Use this DeepSpeed JSON; it must pass `ds-wizard check`.")
@click.option("--data", default=None, metavar="PATH",
              help=".txt, .jsonl (text field), pre-tokenized .bin, or a directory "
                   "(default: the embedded Python-stdlib corpus).")
@click.option("--data-dtype", type=click.Choice(["uint16", "uint32"]), default=None,
              help="Token dtype of a .bin file (default: by vocabulary size).")
@click.option("--tokenizer", default=None, metavar="FILE",
              help="A local HF tokenizer.json (default: bytes, vocabulary 256).")
@click.option("--steps", type=Count(MAX_STEPS), default=None,
              help="Train up to this step (default: the preset's total_steps).")
@click.option("--resume", default=None, metavar="RUN",
              help="Continue a run from its latest complete checkpoint: a run's name, a "
                   "unique prefix of one, its directory, or `latest`.")
@click.option("--gpu-memory", default=None, metavar="SIZE",
              help="Memory of one GPU (80GiB, 80GB, 24G) the batch is fitted to, as with "
                   "--auto. Default: the smallest detected GPU; with neither, the preset's "
                   "batch is used as is.")
@click.option("--headroom", type=FiniteFloat(0, 1, low_open=True), default=HEADROOM,
              show_default=True, help="Plan to this fraction of GPU memory.")
@click.option("--runs-dir", default=RUNS_DIR, show_default=True, metavar="DIR")
@click.option("--backend", type=click.Choice(BACKENDS), default=DEFAULT_BACKEND,
              show_default=True)
@click.option("--grace", type=FiniteFloat(0, 86400), default=GRACE_S, show_default=True,
              metavar="SECONDS",
              help="On Ctrl-C, how long the ranks get to checkpoint before being killed.")
@click.option("--dry-run", is_flag=True, help="Validate and print the summary; start nothing.")
@click.option("--slurm", is_flag=True,
              help="Write an sbatch script for --num-nodes N (it builds the hostfile from "
                   "SLURM_JOB_NODELIST); start nothing here.")
@node_options_exposed
@monitor_option
@click.option("--stall-after", default=None, metavar="RULE",
              help="Call the run stalled when no rank progressed for max(K × median step "
                   "time, FLOOR): 10x, 90s, 10x,5m, or off. Default 10x,60s on CPU ranks, "
                   "10x,300s on GPUs.")
@click.option("--on-stall", type=click.Choice(["wait", "stop"]), default="wait",
              show_default=True,
              help="On a stall, after the stacks are saved: keep waiting, or end the run.")
@click.option("--detach", is_flag=True,
              help="Start the run and return at once, printing its name (follow it with "
                   "`ds-wizard attach NAME`).")
@click.pass_context
def launch(ctx: click.Context, preset_ref: str | None, sets: tuple[str, ...],
           num_gpus: int | None, gpus: str | None, config_path: Path | None, data: str | None,
           data_dtype: str | None, tokenizer: str | None, steps: int | None,
           resume: str | None, gpu_memory: str | None, headroom: float, runs_dir: str,
           backend: str, grace: float, dry_run: bool, detach: bool, slurm: bool,
           num_nodes: int | None, gpus_per_node: int | None, hostfile: Path | None,
           monitor: str | None, stall_after: str | None, on_stall: str) -> None:
    """Train a preset under DeepSpeed, in runs/<preset>-<time>/.

    The run lives under its own supervisor process, not under this terminal. This
    command follows its log; Ctrl-C (or SIGTERM) stops the run gracefully: the ranks
    save a checkpoint, then anything still alive after --grace seconds is killed.
    Closing the terminal (SIGHUP) only detaches: the run goes on; come back with
    `ds-wizard attach NAME`, list runs with `ds-wizard runs`, stop with `ds-wizard stop`.
    Resume with `ds-wizard launch --resume latest`.

    Exit status: 0 finished (or detached), 1 refused or failed (a failing disk too),
    2 usage error, 128+N after a stop by signal N (130 for Ctrl-C), the rank's own
    code when training failed.

    \b
    Examples:
      ds-wizard launch --preset tiny_mamba --steps 40        # CPU demo, 2 ranks
      ds-wizard launch --preset 7b_mamba --num-gpus 8 --dry-run
      ds-wizard launch --preset mamba_130m --set train.lr=3e-4 --data corpus.jsonl
      ds-wizard launch --config deepspeed_4gpu.json --preset 7b_mamba
      ds-wizard launch --resume latest
      ds-wizard launch --preset mamba_1.4b --hostfile hosts          # every node in hosts
      ds-wizard launch --preset mamba_1.4b --num-nodes 4 --gpus-per-node 8 --slurm
    """
    from ds_wizard.launch import plan as planning
    from ds_wizard.launch.client import start_supervisor

    if preset_ref is None and resume is None:
        raise click.UsageError("give --preset NAME, or --resume RUN")
    if detach and dry_run:
        raise click.UsageError("--detach starts a run; --dry-run starts nothing")
    if resume is None:
        # the overrides are applied
        preset, sets = resolve_preset(preset_ref, with_monitor(sets, monitor)), ()
    elif monitor is not None:
        raise click.UsageError("--resume keeps the run's trackers; drop --monitor")
    else:
        preset = preset_ref  # prepare_run refuses --preset/--set on a resume
    if resume is not None and not dry_run:
        from ds_wizard.core.runs.rundir import resolve_run_ref
        from ds_wizard.launch.client import refuse_if_running

        # before a file is touched
        refuse_if_running(resolve_run_ref(resume, runs_dir, resumable=True))
    plan = planning.prepare_run(planning.LaunchRequest(
        preset, num_gpus, sets=sets, config_path=config_path, data=data,
        data_dtype=data_dtype, tokenizer=tokenizer, steps=steps, resume=resume,
        runs_dir=runs_dir, backend=backend, gpu_memory=gpu_memory, headroom=headroom,
        dry_run=dry_run, num_nodes=num_nodes, gpus_per_node=gpus_per_node, hostfile=hostfile,
        slurm=slurm, gpus=gpus, stall_after=stall_after, on_stall=on_stall,
    ))
    if dry_run:
        click.echo(planning.dry_run_text(plan))
        return
    if plan.sbatch is not None:
        for line in planning.scripts_text(plan):
            click.echo(line)
        return
    for line in planning.summary_lines(plan):
        click.echo(line)
    for note in plan.notes:
        click.echo(f"ℹ️  {note}")
    click.echo(f"📁 run directory: {plan.run_dir}")
    from ds_wizard.core.config.monitor import view_commands

    for view in view_commands(plan.config):
        click.echo(f"📈 curves: {view}")
    if plan.stall is not None:
        click.echo(f"⏱  stall watch: stalled when no rank moves for "
                   f"{plan.stall.policy.describe()}; then {plan.stall.on_stall}")
    click.echo(f"🚀 {plan.command_text}", err=False)
    watch = first_run_watch(plan, _echo)

    if detach:
        watch.stop()
        client = start_supervisor(plan, grace_s=grace, detach=True)
        name = plan.paths.root.name
        click.echo(f"🛰  detached: {name} runs under supervisor pid {client.pid}")
        click.echo(f"   follow it: ds-wizard attach {name}   ·   stop it: ds-wizard stop {name}")
        click.echo(name)
        return
    ctx.exit(_foreground(plan, grace, watch))


def _foreground(plan: PreparedRun, grace: float, watch: FirstStepWatch) -> int:
    """Follow the run's log until it ends. Ctrl-C/SIGTERM ask the supervisor for a
    graceful stop (again: kill now); a hang-up detaches and leaves the run running."""
    import threading

    from ds_wizard.launch.client import follow_log, start_supervisor
    from ds_wizard.launch.supervisor import GRACEFUL_STOP, STOP_NOW

    signals: list[int] = []
    detached = threading.Event()
    client = None

    def handle(signum: int, frame: object) -> None:
        if signum == signal.SIGHUP:
            detached.set()  # the terminal is gone: leave the run to its supervisor
            return
        signals.append(signum)
        if client is None:
            return  # still starting: the request is sent once the supervisor is up
        if len(signals) > 2:
            detached.set()  # a third time: this terminal is freed whatever the run does
            return
        _request(client.pid, STOP_NOW if len(signals) > 1 else GRACEFUL_STOP, signum, grace)

    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, handle) for s in stops}
    try:
        client = start_supervisor(plan, grace_s=grace,
                                  on_stderr=lambda line: _echo(line, err=True))
        if signals:
            _request(client.pid, GRACEFUL_STOP, signals[0], grace)
        for line in follow_log(plan.paths.root, client.log_offset, client.running,
                               stop=detached):
            watch.line(line)
            _echo(line)
        if detached.is_set() and client.running():
            name = plan.paths.root.name
            why = "the terminal hung up" if not signals else "asked three times"
            _echo(f"🛰  {why}: detached; {name} goes on running "
                  f"(supervisor pid {client.pid}). Come back with `ds-wizard attach {name}`, "
                  f"stop it with `ds-wizard stop {name}`.", err=True)
            return ExitCode.OK
        assert client.proc is not None
        client.proc.wait()
    finally:
        watch.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return _report(plan, client.proc.returncode, signals[0] if signals else None, client)


def first_run_watch(plan: PreparedRun, say: Callable[[str], None]) -> FirstStepWatch:
    """Say what a first run compiles, then report the wait until the first step."""
    from ds_wizard.core.runs.first_step import FirstStepWatch
    from ds_wizard.core.runs.jit_ops import expected_builds, first_run_notice

    builds = expected_builds(plan.accelerator.kind, plan.config, env=plan.env | dict(os.environ))
    notice = first_run_notice(builds)
    if notice:
        say(f"⏳ {notice}")
    what = ("compiling " + ", ".join(b.name for b in builds)) if builds \
        else "starting the ranks"
    return FirstStepWatch(say, what=what).start()


def _echo(text: str, err: bool = False) -> None:
    """Print, unless the terminal is gone (a hang-up): the run must not care."""
    import contextlib

    with contextlib.suppress(OSError, ValueError):
        click.echo(text, err=err)


def _request(pid: int, sig: int, signum: int, grace: float) -> None:
    import contextlib
    import os

    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    name = signal.Signals(signum).name
    if sig == signal.SIGUSR1:
        _echo(f"\n⏹  {name} again: killing the job now", err=True)
    else:
        _echo(f"\n⏹  {name}: stopping the job gracefully (checkpoint first; killed after "
              f"{grace:.0f} s; again to kill now)", err=True)


def _report(plan: PreparedRun, supervisor_code: int | None, signum: int | None,
            client: SupervisorClient) -> int:
    from ds_wizard.core.runs import rundir
    from ds_wizard.core.runs.runstate import read_run_state

    paths = plan.paths
    latest = rundir.latest_complete(paths.checkpoints)
    where = f"checkpoint {latest.tag}" if latest else "no checkpoint yet"
    state = read_run_state(paths.root)
    ended = state is not None and state.supervisor_pid == client.pid and not state.active
    status = state.status if ended and state is not None else None
    reason = state.stop_reason if ended and state is not None else None
    if status == "stopped" or (signum is not None and status is None):
        if latest is None:
            _echo("⏹  stopped before the first checkpoint; nothing to resume", err=True)
        else:
            _echo(f"⏹  stopped ({reason or 'on request'}): {where} in {paths.checkpoints}; "
                  f"continue with `ds-wizard launch --resume {paths.root.name}`", err=True)
        return ExitCode.SIGNAL_BASE + (signum if signum is not None else signal.SIGTERM)
    if status == "finished":
        _echo(f"✅ training finished: {where}; weights in {paths.final}; "
              f"metrics in {paths.metrics}")
        return ExitCode.OK
    code = state.exit_code if ended and state is not None and state.exit_code else None
    if reason is None:
        said = [ln.removeprefix("error: ") for ln in client.stderr_lines
                if ln.startswith("error: ")]
        reason = said[-1] if said else (f"the run's supervisor exited with code "
                                        f"{supervisor_code} without recording the end")
    exit_code = supervisor_code if supervisor_code else (code or 1)
    raise TrainingFailed(f"training failed: {reason}", f"see {paths.log}; {where}",
                         exit_code=exit_code)


class TrainingFailed(DsWizardError):
    def __init__(self, message: str, hint: str | None = None,
                 exit_code: int = ExitCode.PROBLEM) -> None:
        super().__init__(message, hint)
        self.exit_code = exit_code if 0 < exit_code < 256 else ExitCode.PROBLEM
