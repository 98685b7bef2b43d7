"""The terminal side of a run: start its supervisor, follow its log, stop it.

A client never owns the job. ``start_supervisor`` starts ``python -m
ds_wizard.launch.supervisor`` in a new session and returns once the supervisor has
recorded itself in ``state.json``; from then on the run lives on its own, whatever
happens to the client (Ctrl-C is passed on as a graceful stop request; a hang-up or
``kill -9`` of the client leaves the run running).

    client = start_supervisor(plan, grace_s=60)          # or detach=True
    for line in follow_log(plan.run_dir, client.log_offset, client.running):
        print(line)
    stop_run(run_dir)                                    # from anywhere, later
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ds_wizard.core.base.defaults import GRACE_S, KILL_AFTER_S
from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.base.fsio import read_from, read_tail
from ds_wizard.core.base.system import pid_alive
from ds_wizard.core.runs import rundir
from ds_wizard.core.runs.runstate import (
    STOPPED,
    RunState,
    RunStatus,
    live_processes,
    read_run_state,
    summarize_run,
    write_run_state,
)
from ds_wizard.launch.supervisor import (
    GRACEFUL_STOP,
    STOP_NOW,
    is_rank_cmdline,
    lock_holder,
    supervisor_argv,
)

if TYPE_CHECKING:
    from ds_wizard.launch.plan import PreparedRun

START_TIMEOUT_S = 60.0
POLL_S = 0.2
READ_CHUNK = 1 << 20


class RunInUse(DsWizardError):
    """A launch or resume of a run that is still running."""


def refuse_if_running(run_dir: Path) -> None:
    """Refuse to start a run directory whose job still runs, naming who holds it."""
    summary = summarize_run(run_dir)
    if summary.alive:
        who = (lock_holder(run_dir) if summary.supervisor_alive
               else f"its supervisor is lost; job pids {', '.join(map(str, summary.pids))}")
        raise RunInUse(f"{run_dir.name} is already running ({summary.status.value}: {who})",
                       f"attach with `ds-wizard attach {run_dir.name}` or stop it with "
                       f"`ds-wizard stop {run_dir.name}`")


@dataclass
class SupervisorClient:
    """A started supervisor, seen from the process that started it."""

    run_dir: Path
    pid: int
    log_offset: int  # train.log's size before this launch: its output starts there
    proc: subprocess.Popen[bytes] | None = None  # None once handed over (detached)
    stderr_lines: list[str] = field(default_factory=list)

    def running(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return pid_alive(self.pid)

    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None


def start_supervisor(plan: PreparedRun, *, grace_s: float = GRACE_S, detach: bool = False,
                     on_stderr: Callable[[str], None] | None = None) -> SupervisorClient:
    """Start the run's supervisor in its own session and wait until it runs the job.

    ``detach``: its stderr goes to RUN_DIR/supervisor.log; otherwise a thread hands each
    line to ``on_stderr`` (the foreground client's terminal) while this process lives.
    A DsWizardError when the supervisor refuses (the run is locked) or dies at start.
    """
    run_dir = plan.paths.root
    refuse_if_running(run_dir)
    try:
        offset = plan.paths.log.stat().st_size
    except FileNotFoundError:
        offset = 0
    argv = supervisor_argv(run_dir, plan.command, grace_s, steps=plan.steps,
                           resume_step=plan.resume_step, stall=plan.stall)
    errlog = None
    if detach:
        errlog = (run_dir / "supervisor.log").open("ab")
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=errlog if errlog is not None else subprocess.PIPE,
            env={**os.environ, **plan.env},
            start_new_session=True,  # no terminal signal or hang-up reaches the run
        )
    except OSError as exc:
        raise DsWizardError(f"cannot start the run's supervisor: {exc.strerror or exc}") from exc
    finally:
        if errlog is not None:
            errlog.close()
    client = SupervisorClient(run_dir, proc.pid, offset, proc)
    if proc.stderr is not None:
        threading.Thread(target=_pump, args=(proc.stderr, client, on_stderr), daemon=True,
                         name="supervisor-stderr").start()
    _wait_started(client, detach)
    if plan.resume:
        # a resume records its command only once it runs: a refused one (the run locked,
        # the supervisor gone at start) leaves the run's command.txt as it was
        from ds_wizard.core.base.fsio import atomic_write_text

        atomic_write_text(plan.paths.command, plan.command_text + "\n")
    return client


def _pump(stream: object, client: SupervisorClient,
          on_stderr: Callable[[str], None] | None) -> None:
    for raw in stream:  # type: ignore[attr-defined]
        line = raw.decode("utf-8", errors="replace").rstrip("\n")
        client.stderr_lines.append(line)
        # the supervisor's own "error: …" is the command's one error line, said once at
        # the end (run_end / _said); echoing it here too printed every refusal twice
        if on_stderr is not None and not line.startswith("error: "):
            with contextlib.suppress(OSError, ValueError):
                on_stderr(line)


def _wait_started(client: SupervisorClient, detach: bool) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        state = read_run_state(client.run_dir)
        if state is not None and state.supervisor_pid == client.pid and state.pgid:
            return
        code = client.returncode()
        if code is not None:
            time.sleep(0.2)  # let the stderr pump catch the last line
            said = _said(client)
            raise DsWizardError(said or f"the run's supervisor exited at start (code {code})",
                                None if said else f"see {client.run_dir / 'supervisor.log'}")
        time.sleep(0.05)
    raise DsWizardError(f"the run's supervisor did not start within {START_TIMEOUT_S:.0f} s",
                        f"see {client.run_dir / 'supervisor.log'}")


def _said(client: SupervisorClient) -> str:
    lines = client.stderr_lines or _tail_file(client.run_dir / "supervisor.log")
    errors = [ln.removeprefix("error: ") for ln in lines if ln.startswith("error: ")]
    return errors[-1] if errors else ""


def _tail_file(path: Path) -> list[str]:
    try:
        chunk, _ = read_tail(path, limit=65536, what="supervisor.log")
    except DsWizardError:
        return []  # missing or not a regular file: nothing it said can be shown
    return chunk.decode("utf-8", errors="replace").splitlines()[-20:]


# -- following ---------------------------------------------------------------------------------


def follow_log(run_dir: Path, offset: int, alive: Callable[[], bool],
               stop: threading.Event | None = None) -> Iterator[str]:
    """The lines of RUN_DIR/train.log from ``offset`` on, as they are written, until
    ``alive()`` turns false (the rest is read then) or ``stop`` is set."""
    path = rundir.RunPaths(run_dir).log
    buf = b""
    while True:
        running = alive()
        chunk = _read_from(path, offset)
        offset += len(chunk)
        buf += chunk
        *complete, buf = buf.split(b"\n")
        for raw in complete:
            yield raw.decode("utf-8", errors="replace")
        if len(chunk) == READ_CHUNK:
            continue  # more is waiting: read it before looking at the end
        if not running or (stop is not None and stop.is_set()):
            if buf and not running:
                yield buf.decode("utf-8", errors="replace")
            return
        if stop is not None:
            stop.wait(POLL_S)
        else:
            time.sleep(POLL_S)


def _read_from(path: Path, offset: int) -> bytes:
    """New bytes of a regular file (a device or FIFO in its place gives nothing)."""
    try:
        return read_from(path, offset, limit=READ_CHUNK, what="train.log")
    except DsWizardError:
        return b""  # missing, not a regular file or unreadable now: the end still comes


def tail_offset(run_dir: Path, lines: int = 20) -> int:
    """The offset of the last ``lines`` lines of train.log (where attach starts)."""
    path = rundir.RunPaths(run_dir).log
    try:
        chunk, _ = read_tail(path, limit=65536, what="train.log")
        size = os.stat(path).st_size
    except (DsWizardError, OSError):
        return 0
    cut = chunk.rstrip(b"\n").split(b"\n")
    keep = b"\n".join(cut[-lines:])
    return max(0, size - len(keep) - (1 if chunk.endswith(b"\n") else 0))


def run_alive(run_dir: Path) -> bool:
    """Anything of the run lives (its supervisor, or processes of its job)."""
    state = read_run_state(run_dir)
    if state is not None and state.active and pid_alive(state.supervisor_pid):
        return True
    return summarize_run(run_dir).alive


# -- stopping ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StopResult:
    status: RunStatus  # after the stop
    message: str


def stop_run(run_dir: Path, *, now: bool = False, grace_s: float = GRACE_S,
             kill_after_s: float = KILL_AFTER_S, wait: bool = True) -> StopResult:
    """Stop a run: a request to its supervisor (graceful, or ``now``), or, when the
    supervisor is lost, the same stop done here on the job's processes. With ``wait``,
    returns once nothing of the run is left."""
    summary = summarize_run(run_dir)
    if not summary.alive:
        raise DsWizardError(f"{run_dir.name} is not running ({summary.status.value})",
                            f"resume it with `ds-wizard launch --resume {run_dir.name}`"
                            if summary.resumable else None)
    state = read_run_state(run_dir)
    if summary.supervisor_alive and summary.supervisor_pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(summary.supervisor_pid, STOP_NOW if now else GRACEFUL_STOP)
        if not wait:
            return StopResult(RunStatus.RUNNING, "stop requested")
        limit = (0 if now else grace_s) + kill_after_s + 60
        deadline = time.monotonic() + limit
        while pid_alive(summary.supervisor_pid) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        after = summarize_run(run_dir)
        if after.alive:
            raise DsWizardError(f"{run_dir.name} is still running {limit:.0f} s after the "
                                "stop request", f"try `ds-wizard stop {run_dir.name} --now`")
        return StopResult(after.status, after.stop_reason or after.status.value)
    # the supervisor is gone: end its job here, the same way it would have
    _stop_processes(list(summary.pids), now, grace_s, kill_after_s)
    reason = ("killed by `ds-wizard stop --now` (the supervisor was lost)" if now
              else "stopped by `ds-wizard stop` (the supervisor was lost)")
    base = state if state is not None else RunState(STOPPED, 0)
    with contextlib.suppress(DsWizardError):  # a full disk: the processes are gone anyway
        write_run_state(run_dir, base.ended_as(STOPPED, None, reason))
    after = summarize_run(run_dir)
    if after.alive:
        raise DsWizardError(f"processes of {run_dir.name} survived SIGKILL "
                            f"(pids {', '.join(map(str, after.pids))})")
    return StopResult(after.status, reason)


def _stop_processes(pids: list[int], now: bool, grace_s: float, kill_after_s: float) -> None:
    import psutil

    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            procs.append(psutil.Process(pid))
    if not now:
        ranks = []
        for p in procs:
            with contextlib.suppress(psutil.Error):
                if is_rank_cmdline(p.cmdline()):
                    ranks.append(p)
        for p in ranks or procs:
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGINT)  # the ranks checkpoint at the step's end
        _, procs = psutil.wait_procs(procs, timeout=grace_s)
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.terminate()
        _, procs = psutil.wait_procs(procs, timeout=kill_after_s)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(procs, timeout=10)


def job_pids(run_dir: Path) -> list[int]:
    """Every live process of the run's job (the TUI's slow test counts them)."""
    from ds_wizard.core.runs.runstate import job_processes

    return [p.pid for p in job_processes(live_processes(), run_dir, read_run_state(run_dir))]
