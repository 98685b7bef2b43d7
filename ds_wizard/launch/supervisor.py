"""Supervising the ``deepspeed`` launcher: one job, its own process group, and signals.

Process model: ``deepspeed`` (runner) → ``deepspeed.launcher.launch`` → one
``python -m ds_wizard.train`` per rank, all in one new session/process group. The
supervisor never leaves the group behind: ``wait()`` returns only once no process of the
group is alive, killing stragglers when the launcher itself is gone. There is no detach
mode: closing ds-wizard stops the job (a run can be continued with ``--resume``). To run
unattended, start ``runs/…/launch_deepspeed.sh`` under ``setsid``.

    job = start(plan)                                      # Supervisor: its own process group
    for line in job.lines(): ...                           # or on_line= callback
    job.stop()                                             # graceful: ranks checkpoint
    code = job.wait()

    job, code, signum = run_foreground(plan, on_line=print)  # all of the above, plus
                                                           # SIGINT/SIGTERM/SIGHUP handling
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ds_wizard.core.errors import DsWizardError
from ds_wizard.launch.defaults import GRACE_S, KILL_AFTER_S, LINGER_S, TRAIN_MODULE

if TYPE_CHECKING:
    from ds_wizard.launch.plan import PreparedRun

# a dropped terminal (SIGHUP) must stop the job too: it runs in its own session, which
# the terminal's hang-up never reaches
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    import psutil

    out = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if os.getpgid(proc.pid) == pgid:
                out.append(proc.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return sorted(out)


def is_rank_cmdline(argv: Sequence[str]) -> bool:
    """``python -u -m ds_wizard.train …`` (the runner and launch.py only mention it)."""
    return any(a == "-m" and b == TRAIN_MODULE for a, b in itertools.pairwise(argv))


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class Supervisor:
    """Runs one launcher command in its own process group and never leaves it behind.

    Satisfies the TUI's ``Job`` protocol: ``pid``, ``command``, ``run_dir``, ``lines()``,
    ``stop()``, ``wait()``.
    """

    _EOF = object()

    def __init__(self, command: Sequence[str], *, env: dict[str, str] | None = None,
                 cwd: str | Path | None = None, log_path: str | Path | None = None,
                 run_dir: Path | None = None,
                 on_line: Callable[[str], None] | None = None) -> None:
        self.argv = list(command)
        self.command = shlex.join(self.argv)
        self.run_dir = run_dir
        self._env = {**os.environ, **(env or {})}
        self._cwd = cwd
        self._log_path = Path(log_path) if log_path else None
        self._on_line = on_line
        self._queue: queue.Queue[Any] = queue.Queue()
        self._reader: threading.Thread | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.stop_requested = False
        self.killed = False
        self.returncode: int | None = None
        self.tail: list[str] = []

    # -- start / output -------------------------------------------------------------------
    def start(self) -> Supervisor:
        try:
            self._proc = subprocess.Popen(
                self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=self._env, cwd=self._cwd,
                start_new_session=True,  # own session + process group: signals reach all
            )
        except OSError as exc:
            raise DsWizardError(f"cannot start {self.argv[0]}: {exc.strerror or exc}",
                                "is DeepSpeed installed in this environment?") from exc
        self._reader = threading.Thread(target=self._read, daemon=True, name="job-output")
        self._reader.start()
        return self

    @property
    def pid(self) -> int:
        assert self._proc is not None, "not started"
        return self._proc.pid

    @property
    def pgid(self) -> int:
        return self.pid  # start_new_session makes the leader's pid the group id

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        log = self._log_path.open("a", encoding="utf-8") if self._log_path else None
        try:
            for raw in self._proc.stdout:
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                if log is not None:
                    log.write(line + "\n")
                    log.flush()
                self.tail = [*self.tail[-49:], line]
                if self._on_line is not None:
                    self._on_line(line)
                self._queue.put(line)
        finally:
            if log is not None:
                log.close()
            self._queue.put(self._EOF)

    def lines(self) -> Iterator[str]:
        """Output lines as they come, until every process closed its output."""
        while True:
            item = self._queue.get()
            if item is self._EOF:
                self._queue.put(self._EOF)  # later callers see the end too
                return
            yield item

    # -- state ----------------------------------------------------------------------------
    def pids(self) -> list[int]:
        """Every live process of the job (launcher and ranks)."""
        return group_pids(self.pgid) if self._proc is not None else []

    def rank_pids(self) -> list[int]:
        """The training ranks among :meth:`pids` (not the runner, not launch.py)."""
        import psutil

        out = []
        for pid in self.pids():
            with contextlib.suppress(psutil.Error):
                if is_rank_cmdline(psutil.Process(pid).cmdline()):
                    out.append(pid)
        return out

    # -- stopping -------------------------------------------------------------------------
    def stop(self, grace_s: float = GRACE_S, kill_after_s: float = KILL_AFTER_S) -> int | None:
        """Graceful stop: SIGINT to the ranks (they checkpoint and exit 0, and the launcher
        with them), then SIGTERM and SIGKILL to the whole group if it outlives ``grace_s``.

        Only the ranks get the SIGINT: DeepSpeed's launch.py answers any signal by
        terminating the ranks and killing them 30 s later, which would cut a checkpoint
        that needs longer than that short of ``grace_s``. Before the ranks exist, every
        process but the runner gets it (the runner has no handler and would only print a
        KeyboardInterrupt traceback; it exits when its child does).
        """
        if self._proc is None:
            return None
        self.stop_requested = True
        targets = self.rank_pids() or [p for p in self.pids() if p != self.pid]
        if targets:
            for pid in targets:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGINT)
        else:
            _signal_group(self.pgid, signal.SIGTERM)
        if self._wait_group(grace_s):
            return self.wait()
        _signal_group(self.pgid, signal.SIGTERM)
        if not self._wait_group(kill_after_s):
            self.killed = True
            _signal_group(self.pgid, signal.SIGKILL)
        return self.wait()

    def kill(self) -> None:
        if self._proc is not None:
            self.killed = True
            _signal_group(self.pgid, signal.SIGKILL)

    def _wait_group(self, timeout: float) -> bool:
        """True once the leader exited and the group is empty, within ``timeout``."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None and not self.pids():
                return True
            time.sleep(0.2)
        return self._proc.poll() is not None and not self.pids()

    def wait(self, timeout: float | None = None) -> int:
        """The launcher's exit code, once no process of the group is left.

        If ranks outlive the launcher by ``LINGER_S`` they are killed: the supervisor
        never returns with orphans running.
        """
        assert self._proc is not None, "not started"
        code = self._proc.wait(timeout=timeout)
        if not self._wait_group(LINGER_S):
            self.killed = True
            _signal_group(self.pgid, signal.SIGKILL)
            self._wait_group(5.0)
        if self._reader is not None:
            self._reader.join(timeout=5.0)
        self.returncode = code
        return code


def start(plan: PreparedRun, *, on_line: Callable[[str], None] | None = None) -> Supervisor:
    """Start a prepared plan under a Supervisor (output teed into the run's train.log)."""
    paths = plan.paths
    with paths.log.open("a", encoding="utf-8") as fh:
        fh.write(f"$ {plan.command_text}\n")
    return Supervisor(plan.command, env=plan.env, log_path=paths.log, run_dir=plan.run_dir,
                      on_line=on_line).start()


def run_foreground(
    plan: PreparedRun, *, on_line: Callable[[str], None], grace_s: float = GRACE_S,
    on_signal: Callable[[int], None] | None = None,
) -> tuple[Supervisor, int, int | None]:
    """Start ``plan``, hand each output line to ``on_line``, and return once no process of
    the job is left: the job, the launcher's exit code, and the first stop signal (or None).

    The first SIGINT, SIGTERM or SIGHUP stops the job gracefully (``on_signal`` is told);
    another one kills it. The job runs in its own session, so nothing but this function
    stops it when this process ends: the handlers go in before it starts, and an
    exception (a closed stdout, a failing ``on_line``) stops it before propagating.
    Call from the main thread (signal handlers).
    """
    signals: list[int] = []
    job: Supervisor | None = None

    def begin_stop(signum: int) -> None:
        assert job is not None
        # stop() waits for the group: off this thread, so the output keeps flowing
        threading.Thread(target=job.stop, kwargs={"grace_s": grace_s}, daemon=True,
                         name="job-stop").start()
        if on_signal is not None:
            on_signal(signum)

    def handle(signum: int, frame: object) -> None:
        signals.append(signum)
        if job is None:
            return  # start() is still running; the stop begins as soon as it returns
        if len(signals) == 1:
            begin_stop(signum)
        else:
            job.kill()

    previous = {s: signal.signal(s, handle) for s in STOP_SIGNALS}
    try:
        job = start(plan)
        try:
            if signals:
                begin_stop(signals[0])
            for line in job.lines():
                on_line(line)
            code = job.wait()
        except BaseException:
            job.stop(grace_s=grace_s)
            raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return job, code, signals[0] if signals else None


def rank_failure(lines: Sequence[str]) -> str | None:
    """The launcher's report of a failed rank, made readable, from the job's output."""
    for line in reversed(lines):
        if "exits with return code" in line:
            code = line.rsplit("=", 1)[-1].strip()
            with contextlib.suppress(ValueError):
                value = int(code)
                if value < 0:
                    name = signal.Signals(-value).name
                    why = {"SIGKILL": " (out of memory, or killed by hand)",
                           "SIGSEGV": " (a crash in native code)"}.get(name, "")
                    return f"a rank was killed by {name}{why}"
                return f"a rank exited with code {value}"
    return None


def describe_exit(code: int, sup: Supervisor) -> str:
    if sup.stop_requested:
        return "stopped on request"
    if code == 0:
        return "finished"
    failure = rank_failure(sup.tail)
    base = failure or f"the job exited with code {code}"
    return f"{base}; the launcher stopped the other ranks"
