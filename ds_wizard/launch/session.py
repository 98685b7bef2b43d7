"""One ``ds-wizard launch`` after its flags are parsed: the plan, what is said before the
run starts, the foreground follow (signals passed on to the supervisor), and the end.

    plan = plan_launch(request)               # validates; creates runs/… unless a dry run
    text = preview_text(plan, dry_run=…)      # a dry run or a script-only job: print, done
    end = follow(plan, grace_s, watch, say)   # RunEnd: the exit status and its one line

The command only parses and prints; every decision about the run is made here or in
:mod:`ds_wizard.launch.plan`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ds_wizard.core.base.errors import DsWizardError, ExitCode
from ds_wizard.launch.plan import (
    LaunchRequest,
    PreparedRun,
    dry_run_text,
    prepare_run,
    scripts_text,
    summary_lines,
)

if TYPE_CHECKING:
    from ds_wizard.core.runs.first_step import FirstStepWatch
    from ds_wizard.core.runs.rundir import CheckpointInfo, RunPaths
    from ds_wizard.core.runs.runstate import RunState

#: ``say(line, err)``: print one line; stderr when ``err``
Say = Callable[[str, bool], None]


class TrainingFailed(DsWizardError):
    """The training job failed; the exit status is the rank's own code where it is one."""

    def __init__(self, message: str, hint: str | None = None,
                 exit_code: int = ExitCode.PROBLEM) -> None:
        super().__init__(message, hint)
        self.exit_code = exit_code if 0 < exit_code < 256 else ExitCode.PROBLEM


def plan_launch(request: LaunchRequest) -> PreparedRun:
    """:func:`prepare_run`, after refusing to resume a run that still runs (before a file
    of it is touched)."""
    if request.resume is not None and not request.dry_run:
        from ds_wizard.core.runs.rundir import resolve_run_ref
        from ds_wizard.launch.client import refuse_if_running

        refuse_if_running(resolve_run_ref(str(request.resume), request.runs_dir,
                                          resumable=True))
    return prepare_run(request)


def preview_text(plan: PreparedRun, *, dry_run: bool) -> str | None:
    """The whole output of a launch that starts nothing here (a dry run, or an sbatch
    script to submit); None when the run starts now."""
    if dry_run:
        return dry_run_text(plan)
    if plan.sbatch is not None:
        return "\n".join(scripts_text(plan))
    return None


def start_lines(plan: PreparedRun) -> list[str]:
    """What is said before the run starts: the summary, the notes, where and how."""
    return [*summary_lines(plan), *(f"ℹ️  {note}" for note in plan.notes),
            f"📁 run directory: {plan.run_dir}", f"🚀 {plan.command_text}"]


def detached_lines(plan: PreparedRun, supervisor_pid: int) -> list[str]:
    """A detached start; the last line is the run's name alone, for scripts."""
    name = plan.paths.root.name
    return [f"🛰  detached: {name} runs under supervisor pid {supervisor_pid}",
            f"   follow it: ds-wizard attach {name}   ·   stop it: ds-wizard stop {name}",
            name]


def first_run_watch(plan: PreparedRun, say: Callable[[str], None]) -> FirstStepWatch:
    """Say what a first run compiles, then report the wait until the first step."""
    from ds_wizard.core.runs.doctor import OPT_TORCH_FUSED
    from ds_wizard.core.runs.first_step import FirstStepWatch
    from ds_wizard.core.runs.jit_ops import expected_builds, first_run_notice

    cfg = plan.config
    if plan.run.optimizer == OPT_TORCH_FUSED:  # the ranks hand DeepSpeed torch's AdamW
        cfg = {k: v for k, v in cfg.items() if k != "optimizer"}
    builds = expected_builds(plan.accelerator.kind, cfg, env=plan.env | dict(os.environ))
    notice = first_run_notice(builds)
    if notice:
        say(f"⏳ {notice}")
    what = ("compiling " + ", ".join(b.name for b in builds)) if builds \
        else "starting the ranks"
    return FirstStepWatch(say, what=what).start()


@dataclass(frozen=True)
class RunEnd:
    """How a followed run ended: the exit status and the one line that says so.

    ``failed``: the training failed; the command reports ``message`` (and ``hint``) as its
    one ``error:`` line, exiting ``exit_code``.
    """

    exit_code: int
    message: str
    to_stderr: bool = False
    failed: bool = False
    hint: str | None = None

    def raise_if_failed(self) -> None:
        if self.failed:
            raise TrainingFailed(self.message, self.hint, exit_code=self.exit_code)


def run_end(paths: RunPaths, state: RunState | None, latest: CheckpointInfo | None, *,
            supervisor_pid: int | None, supervisor_code: int | None, signum: int | None,
            stderr_lines: list[str] | tuple[str, ...] = ()) -> RunEnd:
    """Decide how the run ended from what its supervisor recorded in ``state.json`` (only
    a record of this supervisor counts), the newest complete checkpoint, the supervisor's
    exit code, the signal the user sent (if any) and the supervisor's stderr."""
    where = f"checkpoint {latest.tag}" if latest else "no checkpoint yet"
    ended = state is not None and state.supervisor_pid == supervisor_pid and not state.active
    status = state.status if ended and state is not None else None
    reason = state.stop_reason if ended and state is not None else None
    if status == "stopped" or (signum is not None and status is None):
        code = ExitCode.SIGNAL_BASE + (signum if signum is not None else signal.SIGTERM)
        if latest is None:
            return RunEnd(code, "⏹  stopped before the first checkpoint; nothing to resume",
                          to_stderr=True)
        return RunEnd(code, f"⏹  stopped ({reason or 'on request'}): {where} in "
                            f"{paths.checkpoints}; continue with `ds-wizard launch --resume "
                            f"{paths.root.name}`", to_stderr=True)
    if status == "finished":
        return RunEnd(ExitCode.OK, f"✅ training finished: {where}; weights in {paths.final}; "
                                   f"metrics in {paths.metrics}")
    recorded = state.exit_code if ended and state is not None and state.exit_code else None
    if reason is None:
        said = [ln.removeprefix("error: ") for ln in stderr_lines if ln.startswith("error: ")]
        reason = said[-1] if said else (f"the run's supervisor exited with code "
                                        f"{supervisor_code} without recording the end")
    exit_code = supervisor_code if supervisor_code else (recorded or ExitCode.PROBLEM)
    if not 0 < exit_code < 256:
        exit_code = ExitCode.PROBLEM
    return RunEnd(exit_code, f"training failed: {reason}", to_stderr=True, failed=True,
                  hint=f"see {paths.log}; {where}")


def follow(plan: PreparedRun, grace_s: float, watch: FirstStepWatch, say: Say) -> RunEnd:
    """Start the supervisor and follow the run's log until it ends. Ctrl-C/SIGTERM ask
    the supervisor for a graceful stop (again: kill now; a third time: detach); a hang-up
    detaches and leaves the run running."""
    from ds_wizard.core.runs import rundir
    from ds_wizard.core.runs.runstate import read_run_state
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
        _request(client.pid, STOP_NOW if len(signals) > 1 else GRACEFUL_STOP, signum,
                 grace_s, say)

    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, handle) for s in stops}
    try:
        client = start_supervisor(plan, grace_s=grace_s, on_stderr=lambda line: say(line, True))
        if signals:
            _request(client.pid, GRACEFUL_STOP, signals[0], grace_s, say)
        for line in follow_log(plan.paths.root, client.log_offset, client.running,
                               stop=detached):
            watch.line(line)
            say(line, False)
        if detached.is_set() and client.running():
            name = plan.paths.root.name
            why = "the terminal hung up" if not signals else "asked three times"
            return RunEnd(ExitCode.OK, f"🛰  {why}: detached; {name} goes on running "
                          f"(supervisor pid {client.pid}). Come back with `ds-wizard attach "
                          f"{name}`, stop it with `ds-wizard stop {name}`.", to_stderr=True)
        assert client.proc is not None
        client.proc.wait()
    finally:
        watch.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    paths = plan.paths
    return run_end(paths, read_run_state(paths.root), rundir.latest_complete(paths.checkpoints),
                   supervisor_pid=client.pid, supervisor_code=client.proc.returncode,
                   signum=signals[0] if signals else None, stderr_lines=client.stderr_lines)


def _request(pid: int, sig: int, signum: int, grace_s: float, say: Say) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    name = signal.Signals(signum).name
    if sig == signal.SIGUSR1:
        say(f"\n⏹  {name} again: killing the job now", True)
    else:
        say(f"\n⏹  {name}: stopping the job gracefully (checkpoint first; killed after "
            f"{grace_s:.0f} s; again to kill now)", True)
