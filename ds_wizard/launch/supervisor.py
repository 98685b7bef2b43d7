"""Supervising the ``deepspeed`` launcher: one job, its own process group, and signals.

Process model: ds-wizard (a client: ``launch``, ``attach``, the TUI) → the run's
supervisor process (``python -m ds_wizard.launch.supervisor RUN_DIR``, its own session;
:class:`RunDaemon`) → ``deepspeed`` (runner) → ``deepspeed.launcher.launch`` → one
``python -m ds_wizard.train`` per rank, all in one new session/process group.
:class:`Supervisor` owns that group and never leaves it behind: ``wait()`` returns only
once no process of the group is alive, killing stragglers when the launcher itself is gone.
Closing the client never stops the run; see ``ds_wizard.launch.client`` and docs/runs.md.

    job = Supervisor(command, log_path=log).start()        # its own process group
    for line in job.lines(): ...                           # or on_line= callback
    job.stop()                                             # graceful: ranks checkpoint
    code = job.wait()
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ds_wizard.core.base.errors import DsWizardError, ExitCode
from ds_wizard.launch.defaults import GRACE_S, KILL_AFTER_S, LINGER_S, TRAIN_MODULE
from ds_wizard.launch.stall_monitor import (
    StallMonitor,
    StallOptions,
    add_stall_arguments,
    run_trackers,
)

if TYPE_CHECKING:
    from ds_wizard.core.runs.runstate import RunState


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


def _close_quietly(fh: Any) -> None:
    """Close a file whose writes already failed; the failure is recorded already."""
    with contextlib.suppress(OSError):
        fh.close()


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
                 on_line: Callable[[str], None] | None = None,
                 on_io_error_line: Callable[[str], None] | None = None,
                 queue_lines: bool = True, direct_log: bool = False) -> None:
        self.argv = list(command)
        self.command = shlex.join(self.argv)
        self.run_dir = run_dir
        self._env = {**os.environ, **(env or {})}
        self._cwd = cwd
        self._log_path = Path(log_path) if log_path else None
        self._on_line = on_line
        self._on_io_error_line = on_io_error_line
        self._queue_lines = queue_lines  # False: nobody calls lines(), keep no copy
        self._direct_log = direct_log
        self.io_error: str | None = None  # the first failed write of the log, one line
        self.output_done = threading.Event()
        self._queue: queue.Queue[Any] = queue.Queue()
        self._reader: threading.Thread | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.stop_requested = False
        self.killed = False
        self.returncode: int | None = None
        self.tail: list[str] = []

    # -- start / output -------------------------------------------------------------------
    def start(self) -> Supervisor:
        """Start the job. With ``direct_log`` its output goes straight into the log file
        (O_APPEND) instead of through a pipe this process reads: the job then never
        depends on this process being alive (a reader killed with -9 would otherwise
        break the ranks' stdout)."""
        out: Any = subprocess.PIPE
        if self._direct_log:
            assert self._log_path is not None, "direct_log needs log_path"
            try:
                out = os.open(self._log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except OSError as exc:
                self._io_failed(self._log_path, exc)
                out = subprocess.DEVNULL
        try:
            self._proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=self._env, cwd=self._cwd,
                start_new_session=True,  # own session + process group: signals reach all
            )
        except OSError as exc:
            raise DsWizardError(f"cannot start {self.argv[0]}: {exc.strerror or exc}",
                                "is DeepSpeed installed in this environment?") from exc
        finally:
            if isinstance(out, int) and out >= 0:
                os.close(out)
        if self._direct_log:
            self._queue.put(self._EOF)
            self.output_done.set()
            return self
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
        """Drain the job's output until every process closed it, whatever fails.

        A log write that fails (a full disk, an I/O error) is recorded in ``io_error``
        once; from then on the lines go to ``on_io_error_line`` (the supervisor's stderr,
        a client's terminal) and to ``tail``, and the pipe keeps being drained so the
        ranks never block on a full pipe. The end is always signalled.
        """
        assert self._proc is not None and self._proc.stdout is not None
        log = None
        if self._log_path is not None:
            try:
                log = self._log_path.open("a", encoding="utf-8")
            except OSError as exc:
                self._io_failed(self._log_path, exc)
        try:
            for raw in self._proc.stdout:
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                if log is not None:
                    try:
                        log.write(line + "\n")
                        log.flush()
                    except OSError as exc:
                        self._io_failed(self._log_path, exc)
                        log = _close_quietly(log)
                if log is None and self.io_error is not None and self._on_io_error_line:
                    self._on_io_error_line(line)
                self.tail = [*self.tail[-49:], line]
                if self._on_line is not None:
                    self._on_line(line)
                if self._queue_lines:
                    self._queue.put(line)
        except OSError as exc:  # the pipe itself failed: nothing more can be read
            self._io_failed(None, exc)
        finally:
            if log is not None:
                try:
                    log.close()
                except OSError as exc:
                    self._io_failed(self._log_path, exc)
            self._queue.put(self._EOF)
            self.output_done.set()

    def _io_failed(self, path: Path | None, exc: OSError) -> None:
        if self.io_error is None:
            from ds_wizard.core.runs.runstate import describe_disk

            what = f"cannot write {path}" if path is not None else "cannot read the job's output"
            where = f"; {describe_disk(path)}" if path is not None else ""
            self.io_error = f"{what}: {exc.strerror or exc}{where}"

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
        if any(a.startswith("--hostfile=") for a in self.argv) and not self.rank_pids():
            # a multi-node job's ranks run on the hosts, not in this group: DeepSpeed's
            # runner answers SIGTERM by stopping pdsh and killing launch.py on every host
            # (whose ranks then get SIGTERM and checkpoint)
            targets = [self.pid]
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGTERM)
        elif targets:
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
        if self._direct_log and self._log_path is not None:
            self.tail = _last_lines(self._log_path, 50)
        self.returncode = code
        return code


def _last_lines(path: Path, n: int) -> list[str]:
    from ds_wizard.core.base.fsio import read_tail

    try:
        chunk, _ = read_tail(path, limit=32768, what="train.log")
    except DsWizardError:
        return []  # missing or not a regular file (a FIFO is never waited on)
    return chunk.decode("utf-8", errors="replace").splitlines()[-n:]


# -- the per-run supervisor process ------------------------------------------------------------
#
# ``python -m ds_wizard.launch.supervisor RUN_DIR --grace S -- COMMAND…`` runs one launch of
# a run in its own session, so that nothing done to the client's terminal reaches it. It
# holds RUN_DIR/supervisor.lock (flock) for its whole life, records the run's state in
# RUN_DIR/state.json, appends the job's output to RUN_DIR/train.log, and answers:
#   SIGTERM, SIGINT   graceful stop (the ranks checkpoint; killed after the grace period);
#                     a second one kills the job
#   SIGUSR1           stop now: kill the job's process group
#   SIGHUP            ignored
# Its exit status: 0 finished or stopped, the launcher's code when the job failed,
# 1 (ExitCode.PROBLEM) when the run directory is locked or its disk failed.

GRACEFUL_STOP = signal.SIGTERM
STOP_NOW = signal.SIGUSR1


class RunLocked(DsWizardError):
    """Another supervisor holds the run directory."""


def lock_holder(run_dir: Path) -> str:
    """What the lock file says about its holder (written by the holder), one line."""
    from ds_wizard.core.base.fsio import read_text
    from ds_wizard.core.runs.runstate import lock_path

    try:
        text = read_text(lock_path(run_dir), limit=4096, what="lock file",
                         errors="replace").strip()
    except DsWizardError:
        text = ""
    return text.splitlines()[0] if text else "another process"


def acquire_run_lock(run_dir: Path, describe: str) -> int:
    """Take RUN_DIR/supervisor.lock (an advisory flock, non-blocking) and write
    ``describe`` into it; the fd is held until the process ends. RunLocked if taken."""
    import fcntl

    from ds_wizard.core.runs.runstate import lock_path

    path = lock_path(run_dir)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise DsWizardError(f"cannot open {path}: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise RunLocked(f"{run_dir.name} is in use: {lock_holder(run_dir)} holds {path}",
                        f"see `ds-wizard runs`; stop it with `ds-wizard stop {run_dir.name}`"
                        ) from exc
    with contextlib.suppress(OSError):  # the description is informative only
        os.ftruncate(fd, 0)
        os.write(fd, (describe + "\n").encode("utf-8"))
    return fd


class RunDaemon:
    """The body of the supervisor process (see the comment above)."""

    def __init__(self, run_dir: Path, command: Sequence[str], grace_s: float,
                 steps: int | None = None, resume_step: int | None = None,
                 stall: StallOptions | None = None) -> None:
        self.run_dir = run_dir
        self.stall = stall
        self.command = list(command)
        self.grace_s = grace_s
        self.steps = steps
        self.resume_step = resume_step
        self.requests: list[str] = []  # "stop" | "now", appended by signal handlers
        self.job: Supervisor | None = None
        self.reason: str | None = None
        self._disk_checked = 0.0
        self._state_unwritable = False

    def _say(self, text: str) -> None:
        """A line on stderr: a foreground client shows it; nobody may be listening."""
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    def _record(self, state: RunState) -> bool:
        from ds_wizard.core.runs.runstate import write_run_state

        try:
            write_run_state(self.run_dir, state)
            return True
        except DsWizardError as exc:
            if not self._state_unwritable:  # once: a full disk fails every later write
                self._say(f"error: {exc.one_line()}")
            self._state_unwritable = True
            return False

    def _disk_full(self, log: Path) -> bool:
        """Checked about once a second: the run's disk has (almost) no room left."""
        from ds_wizard.core.runs.runstate import describe_disk, disk_nearly_full

        now = time.monotonic()
        if now - self._disk_checked < 1.0:
            return False
        self._disk_checked = now
        if not disk_nearly_full(self.run_dir):
            return False
        assert self.job is not None
        self.job.io_error = f"{describe_disk(self.run_dir)} is full (writing {log.parent})"
        return True

    def _log_end(self, job: Supervisor, log: Path, code: int) -> None:
        """The supervisor's last line in train.log; a write that fails names the disk."""
        try:
            with log.open("a", encoding="utf-8") as fh:
                fh.write(f"[ds-wizard supervisor] the job exited with code {code}\n")
        except OSError as exc:
            if job.io_error is None:
                job._io_failed(log, exc)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.requests.append("now" if signum == STOP_NOW else "stop")

    def run(self) -> int:
        import socket

        from ds_wizard.core.runs import rundir
        from ds_wizard.core.runs.runstate import (
            FAILED,
            FINISHED,
            RUNNING,
            STARTING,
            STOPPED,
            STOPPING,
            RunState,
            describe_disk,
            disk_nearly_full,
            job_processes,
            live_processes,
            now_iso,
            read_run_state,
        )

        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        for sig in (signal.SIGTERM, signal.SIGINT, STOP_NOW):
            signal.signal(sig, self._on_signal)
        host = socket.gethostname()
        started = now_iso()
        try:
            acquire_run_lock(self.run_dir, f"ds-wizard supervisor pid {os.getpid()} on "
                                           f"{host} since {started}")
        except DsWizardError as exc:
            self._say(f"error: {exc.one_line()}")
            return int(exc.exit_code)
        # a supervisor killed with -9 released the lock, but its ranks may live on
        leftover = job_processes(live_processes(), self.run_dir, read_run_state(self.run_dir))
        if leftover:
            self._say(f"error: {self.run_dir.name} still has {len(leftover)} process(es) of "
                      f"an earlier launch (pids {', '.join(str(p.pid) for p in leftover)}) "
                      f"(end them with `ds-wizard stop {self.run_dir.name}`)")
            return int(ExitCode.PROBLEM)
        state = RunState(STARTING, os.getpid(), started=started, steps=self.steps,
                         resume_step=self.resume_step, command=shlex.join(self.command),
                         host=host)
        self._record(state)
        log = rundir.RunPaths(self.run_dir).log
        try:
            with log.open("a", encoding="utf-8") as fh:
                fh.write(f"$ {shlex.join(self.command)}\n")
        except OSError:
            pass  # the job's own output reports the disk again, through the reader
        try:
            job = Supervisor(self.command, log_path=log, run_dir=self.run_dir,
                             queue_lines=False, direct_log=True).start()
        except DsWizardError as exc:
            self._record(state.ended_as(FAILED, None, exc.one_line()))
            self._say(f"error: {exc.one_line()}")
            return int(exc.exit_code)
        self.job = job
        state = replace(state, status=RUNNING, pgid=job.pgid, trackers=run_trackers(self.run_dir))
        self._record(state)
        stopper: threading.Thread | None = None
        watch = StallMonitor(self, job, log) if self.stall is not None else None
        while job._proc is not None and job._proc.poll() is None:
            if watch is not None and stopper is None and not job.killed:
                state = watch.turn(state)
            if self.requests and stopper is None:
                now = "now" in self.requests
                self.reason = "killed on request" if now else "stopped on request"
                state = replace(state, status=STOPPING, stop_reason=self.reason)
                self._record(state)
                if now:
                    job.kill()
                else:
                    stopper = threading.Thread(target=job.stop, kwargs={"grace_s": self.grace_s},
                                               daemon=True, name="job-stop")
                    stopper.start()
            elif stopper is not None and len(self.requests) > 1 and not job.killed:
                job.kill()  # asked again: do not wait for the checkpoint
            elif stopper is None and job.io_error is None and self._disk_full(log):
                pass  # _disk_full recorded job.io_error: stopped on the next turn
            elif job.io_error is not None and stopper is None:
                self._say(f"error: {job.io_error}; stopping the job")
                self.reason = job.io_error
                self.requests.append("disk")
                state = replace(state, status=STOPPING, stop_reason=job.io_error)
                self._record(state)
                stopper = threading.Thread(target=job.stop, kwargs={"grace_s": self.grace_s},
                                           daemon=True, name="job-stop")
                stopper.start()
            time.sleep(0.2)
        code = job.wait() if stopper is None else (stopper.join() or job.wait())
        self._log_end(job, log, code)
        if watch is not None:
            state = watch.ended(state)
        if job.io_error is not None:
            status, reason, exit_code = FAILED, job.io_error, int(ExitCode.PROBLEM)
        elif watch is not None and watch.stop_reason is not None:
            status, reason, exit_code = FAILED, watch.stop_reason, int(ExitCode.PROBLEM)
        elif self.reason is not None:
            status, reason, exit_code = STOPPED, self.reason, 0
        elif code == 0:
            status, reason, exit_code = FINISHED, "finished", 0
        else:
            status, exit_code = FAILED, code if 0 < code < 256 else 1
            reason = describe_exit(code, job)
            if disk_nearly_full(self.run_dir):
                reason = f"{reason}; {describe_disk(self.run_dir)} is full"
                exit_code = int(ExitCode.PROBLEM)  # a failing disk: the documented code
        recorded = self._record(state.ended_as(status, code, reason))
        if status == FAILED:
            self._say(f"error: {reason}")
        elif not recorded:
            self._say(f"note: {status}: {reason} (state.json could not be written)")
        return exit_code


def supervisor_argv(run_dir: Path, command: Sequence[str], grace_s: float,
                    steps: int | None = None, resume_step: int | None = None,
                    stall: StallOptions | None = None) -> list[str]:
    """The command line that starts a run's supervisor."""
    argv = [sys.executable, "-m", "ds_wizard.launch.supervisor", str(run_dir.resolve()),
            "--grace", str(grace_s)]
    if stall is not None:
        argv += stall.argv()
    if steps is not None:
        argv += ["--steps", str(steps)]
    if resume_step is not None:
        argv += ["--resume-step", str(resume_step)]
    return [*argv, "--", *command]


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m ds_wizard.launch.supervisor",
                                description="Run one launch of a ds-wizard run (internal).")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--grace", type=float, default=GRACE_S)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--resume-step", type=int, default=None)
    add_stall_arguments(p)
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        p.error("no command after --")
    cut = argv.index("--")
    args = p.parse_args(argv[:cut])
    command = argv[cut + 1:]
    if not command:
        p.error("no command after --")
    daemon = RunDaemon(args.run_dir.resolve(), command, args.grace, args.steps,
                       args.resume_step, stall=StallOptions.from_args(args))
    return daemon.run()


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


if __name__ == "__main__":
    sys.exit(main())
