"""A run's live state: what its supervisor recorded, checked against the live processes.

Every launch runs under a per-run supervisor (``python -m ds_wizard.launch.supervisor``,
its own session). The supervisor writes ``state.json`` in the run directory atomically
(:func:`write_run_state`) and holds an advisory ``flock`` on ``supervisor.lock`` for as
long as it lives. A reader never trusts the file alone: :func:`run_status` compares it
with a snapshot of the process table (:class:`ProcessTable`), so a supervisor killed
with ``kill -9`` shows as ``supervisor lost`` while its ranks live, and as ``failed``
once they are gone too.

    for s in list_run_summaries("runs"):        # oldest first
        print(s.name, s.status.value, s.step, s.total_steps, s.loss)

psutil is imported only inside :func:`live_processes`; tests build a
:class:`ProcessTable` from fake :class:`ProcInfo` rows.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from ds_wizard.core.base import system
from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.base.fsio import read_json, read_tail
from ds_wizard.core.runs import rundir
from ds_wizard.core.runs.runspec import parse_metrics
from ds_wizard.core.runs.stall import Stall

STATE_JSON = "state.json"
LOCK_FILE = "supervisor.lock"
SUPERVISOR_MODULE = "ds_wizard.launch.supervisor"

# what a supervisor records (RunState.status)
STARTING, RUNNING, STOPPING = "starting", "running", "stopping"
# no rank's heartbeat moved for the stall window (core.runs.stall); the job still runs
STALLED = "stalled"
FINISHED, FAILED, STOPPED = "finished", "failed", "stopped"
ACTIVE_STATES = (STARTING, RUNNING, STOPPING, STALLED)
MAX_EPISODES = 20  # stall episodes kept in state.json
LOST_RECORD = ("the supervisor ended without recording the end (killed, or its disk "
               "failed) and no process of the job is left")
ENDED_STATES = (FINISHED, FAILED, STOPPED)


class RunStatus(str, Enum):
    """A run's status as ``ds-wizard runs`` shows it, always checked against processes."""

    RUNNING = "running"
    #: the supervisor sees no rank progress (``stall`` says where); the job is alive
    STALLED = "stalled"
    FINISHED = "finished"
    FAILED = "failed"
    STOPPED = "stopped"
    #: the supervisor is gone (kill -9, a crash) but processes of the job still live;
    #: ``ds-wizard stop`` ends them
    LOST = "supervisor lost"
    #: no state.json: a run from an older ds-wizard, or one whose supervisor is starting
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class RunState:
    """The keys of ``state.json``, rewritten (atomically) at every change of status."""

    status: str  # one of ACTIVE_STATES + ENDED_STATES
    supervisor_pid: int
    pgid: int | None = None  # the job's process group (the deepspeed runner's pid)
    started: str = ""  # ISO time this launch began
    ended: str | None = None
    exit_code: int | None = None  # the launcher's, or the supervisor's own on a fault
    stop_reason: str | None = None  # one line: why it ended ("stopped on request", …)
    steps: int | None = None  # the step this launch trains up to
    resume_step: int | None = None  # the checkpoint this launch resumed from
    command: str = ""
    host: str = ""
    # issue 22: the stall in progress (core.runs.stall.Stall.to_dict()), the episodes so
    # far (each with its end), and the trackers' output directories
    stall: dict[str, Any] | None = None
    stalls: list[dict[str, Any]] = field(default_factory=list)
    trackers: dict[str, str] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        """Raises KeyError/TypeError/ValueError when the record is not a run state."""
        known = {f.name for f in fields(cls)}
        state = cls(**{k: v for k, v in data.items() if k in known})
        if state.status not in ACTIVE_STATES + ENDED_STATES:
            raise ValueError(f"unknown status {state.status!r}")
        if not isinstance(state.supervisor_pid, int):
            raise TypeError("supervisor_pid is not an integer")
        return state

    def ended_as(self, status: str, exit_code: int | None, reason: str) -> RunState:
        """This state, ended now."""
        return replace(self, status=status, exit_code=exit_code, stop_reason=reason,
                       ended=now_iso())


def now_iso() -> str:
    return datetime.now().isoformat(timespec="seconds")


def state_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / STATE_JSON


def lock_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / LOCK_FILE


def write_run_state(run_dir: str | Path, state: RunState) -> None:
    """Write ``state.json`` atomically (a WriteError when the disk refuses)."""
    from ds_wizard.core.base.fsio import atomic_write_text

    atomic_write_text(state_path(run_dir), json.dumps(state.to_dict(), indent=2) + "\n")


def read_run_state(run_dir: str | Path) -> RunState | None:
    """``state.json``, or None when it is missing or unreadable (an older run)."""
    try:
        data = read_json(state_path(run_dir), limit=MAX_STATE_BYTES, what="state.json")
        return RunState.from_dict(data) if isinstance(data, dict) else None
    except (DsWizardError, TypeError, KeyError, ValueError):
        return None  # missing, a FIFO, too big, too deep, not JSON: an unreadable state


#: bytes of state.json: a few hundred in practice
MAX_STATE_BYTES = 1 << 20


# -- the process table ------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcInfo:
    """One live (non-zombie) process."""

    pid: int
    pgid: int
    cmdline: tuple[str, ...]


@dataclass
class ProcessTable:
    """A snapshot of the processes, indexed by pid and by process group."""

    procs: Iterable[ProcInfo]
    _by_pid: dict[int, ProcInfo] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_pid = {p.pid: p for p in self.procs}

    def get(self, pid: int | None) -> ProcInfo | None:
        return self._by_pid.get(pid) if pid is not None else None

    def __iter__(self) -> Iterator[ProcInfo]:
        return iter(self._by_pid.values())


def live_processes() -> ProcessTable:
    """The live processes of this machine (psutil; zombies left out)."""
    import psutil

    rows = []
    for proc in psutil.process_iter(["pid", "status", "cmdline"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            rows.append(ProcInfo(proc.pid, os.getpgid(proc.pid),
                                 tuple(proc.info["cmdline"] or ())))
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return ProcessTable(rows)


def _key(run_dir: Path) -> str:
    try:
        return str(run_dir.resolve())
    except OSError:
        return str(run_dir.absolute())


def is_supervisor_of(proc: ProcInfo | None, run_dir: Path) -> bool:
    """``proc`` is the supervisor of ``run_dir`` (not merely a process that reused the pid)."""
    if proc is None:
        return False
    key = _key(run_dir)
    argv = proc.cmdline
    return any(a == SUPERVISOR_MODULE for a in argv) and key in argv


def job_processes(table: ProcessTable, run_dir: Path, state: RunState | None) -> list[ProcInfo]:
    """The live processes of the run's job: the deepspeed runner, launch.py and the ranks.

    A process counts when it is in the recorded process group, or when its command line
    trains this run (``--run-dir RUN_DIR``: every process of the job carries it), so the
    ranks of a run started by an older ds-wizard are found too. The supervisor itself is
    not counted.
    """
    key = _key(run_dir)
    pgid = state.pgid if state is not None else None
    out = []
    for proc in table:
        if is_supervisor_of(proc, run_dir):
            continue
        names_run = any(a == "--run-dir" and b == key
                        for a, b in zip(proc.cmdline, proc.cmdline[1:], strict=False))
        # the group alone is not proof after a reboot (pids wrap): it must name the run
        in_group = pgid is not None and proc.pgid == pgid and any(key in a for a in proc.cmdline)
        if names_run or in_group:
            out.append(proc)
    return sorted(out, key=lambda p: p.pid)


def run_status(run_dir: str | Path, state: RunState | None,
               table: ProcessTable) -> tuple[RunStatus, list[ProcInfo], bool]:
    """The run's status, its live job processes, and whether its supervisor lives."""
    run_dir = Path(run_dir)
    live = job_processes(table, run_dir, state)
    supervisor = state is not None and is_supervisor_of(table.get(state.supervisor_pid), run_dir)
    if state is None:
        if live:
            return RunStatus.LOST, live, False
        final = rundir.RunPaths(run_dir).final
        return (RunStatus.FINISHED if final.is_dir() else RunStatus.UNKNOWN), live, False
    if state.active:
        if supervisor:
            status = RunStatus.STALLED if state.status == STALLED else RunStatus.RUNNING
            return status, live, True
        if live:
            return RunStatus.LOST, live, False
        # the supervisor died without recording the end (kill -9, a full disk)
        return RunStatus.FAILED, live, False
    if live:
        return RunStatus.LOST, live, supervisor
    return RunStatus(state.status), live, supervisor


# -- summaries --------------------------------------------------------------------------------


def last_metrics(path: str | Path, window: int = 65536) -> dict[str, Any] | None:
    """The last complete record of ``metrics.jsonl``, reading only the file's tail."""
    try:
        chunk, _ = read_tail(path, limit=window, what="metrics.jsonl")
    except DsWizardError:
        return None  # missing, or not a regular file (a FIFO is never opened blocking)
    for raw in reversed(chunk[: chunk.rfind(b"\n") + 1].splitlines()):
        record = parse_metrics(raw)
        if record is not None and isinstance(record.get("step"), int):
            return record
    return None


@dataclass(frozen=True)
class RunSummary:
    """One row of ``ds-wizard runs`` (and of the TUI's Runs screen)."""

    name: str
    run_dir: Path
    preset: str
    status: RunStatus
    step: int | None  # the last logged step
    total_steps: int | None  # what the latest launch trains up to
    loss: float | None  # at ``step``
    tokens_per_s: float | None
    started: str  # ISO time the latest launch began (run.json's "created" before that)
    ended: str | None
    exit_code: int | None
    stop_reason: str | None
    stopping: bool  # a stop was requested and the job is still ending
    supervisor_pid: int | None
    supervisor_alive: bool
    pgid: int | None
    pids: tuple[int, ...]  # the job's live processes
    checkpoint_step: int | None  # the newest complete checkpoint
    # the run's lineage (core.runs.reshape): one entry per layout it trained on, with the
    # steps, world size, nodes and batch triple of each
    segments: tuple[dict[str, Any], ...] = ()
    # "stalled for 4m: rank 3 (node b) last in backward at step 812"; None when not stalled
    stall: str | None = None
    stall_detail: dict[str, Any] | None = None  # state.json's stall (autopsy dir, odd one)
    stall_episodes: tuple[dict[str, Any], ...] = ()  # the stalls that ended
    trackers: dict[str, str] = field(default_factory=dict)  # tracker → output directory

    @property
    def alive(self) -> bool:
        """Anything of the run still runs (so it can be attached to or stopped)."""
        return self.status in (RunStatus.RUNNING, RunStatus.STALLED, RunStatus.LOST) \
            or bool(self.pids)

    @property
    def resumable(self) -> bool:
        return not self.alive and self.checkpoint_step is not None \
            and self.status != RunStatus.FINISHED

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["run_dir"] = str(self.run_dir)
        out["status"] = self.status.value
        out["pids"] = list(self.pids)
        out["segments"] = list(self.segments)
        out["stall_episodes"] = list(self.stall_episodes)
        out["alive"], out["resumable"] = self.alive, self.resumable
        return out


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def summarize_run(run_dir: str | Path, table: ProcessTable | None = None) -> RunSummary:
    """The summary of one run directory (``table`` defaults to :func:`live_processes`)."""
    run_dir = Path(run_dir)
    table = table if table is not None else live_processes()
    paths = rundir.RunPaths(run_dir)
    try:
        info = rundir.load_run_json(run_dir)
    except rundir.RunError:
        info = {}
    state = read_run_state(run_dir)
    status, live, sup_alive = run_status(run_dir, state, table)
    last = last_metrics(paths.metrics) or {}
    ckpt = rundir.latest_complete(paths.checkpoints)
    total = state.steps if state is not None and state.steps else info.get("steps")
    step = last.get("step")
    return RunSummary(
        name=run_dir.name, run_dir=run_dir, preset=str(info.get("preset", "?")),
        status=status, step=step if isinstance(step, int) else None,
        total_steps=total if isinstance(total, int) else None,
        loss=_num(last.get("loss")), tokens_per_s=_num(last.get("tokens_per_s")),
        started=(state.started if state is not None and state.started
                 else str(info.get("created", ""))),
        ended=state.ended if state is not None else None,
        exit_code=state.exit_code if state is not None else None,
        stop_reason=(LOST_RECORD if state is not None and state.active
                     and status is RunStatus.FAILED
                     else state.stop_reason if state is not None else None),
        stopping=(state is not None and state.status == STOPPING
                  and status in (RunStatus.RUNNING, RunStatus.LOST)),
        supervisor_pid=state.supervisor_pid if state is not None else None,
        supervisor_alive=sup_alive, pgid=state.pgid if state is not None else None,
        pids=tuple(p.pid for p in live), checkpoint_step=ckpt.step if ckpt else None,
        segments=_lineage(info, step if isinstance(step, int) else None),
        **_stall_fields(state, status),
    )


def _lineage(info: dict[str, Any], last_step: int | None) -> tuple[dict[str, Any], ...]:
    from ds_wizard.core.runs.reshape import segment_spans, segments_of

    if not info:
        return ()
    return tuple(span.to_dict() for span in segment_spans(segments_of(info), last_step))


def _stall_fields(state: RunState | None, status: RunStatus) -> dict[str, Any]:
    """The summary's stall and tracker fields, from state.json (one truth)."""
    if state is None:
        return {}
    stall = Stall.from_dict(state.stall) if status is RunStatus.STALLED else None
    return {"stall": stall.line(time.time()) if stall is not None else None,
            "stall_detail": state.stall if stall is not None else None,
            "stall_episodes": tuple(e for e in state.stalls if isinstance(e, dict)),
            "trackers": dict(state.trackers) if isinstance(state.trackers, dict) else {}}


def list_run_summaries(runs_dir: str | Path,
                       table: ProcessTable | None = None) -> list[RunSummary]:
    """Every run under ``runs_dir``, oldest first, its status checked against one snapshot
    of the process table."""
    found = rundir.list_runs(runs_dir)
    if not found:
        return []
    table = table if table is not None else live_processes()
    return [summarize_run(d, table) for d in found]


# -- the disk ---------------------------------------------------------------------------------


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def describe_disk(path: str | Path) -> str:
    """One phrase naming the disk of ``path``: ``the disk at /mnt/x (tmpfs, 0 B free of
    20.0 MiB)``. It goes inside another error's line, so a disk psutil cannot read is named
    by its path and that reason rather than raising over the error it describes."""
    try:
        disk = system.disk_of(path)
    except system.SystemFactError as err:
        return f"the disk holding {path} ({err.message})"
    return (f"the disk at {disk.mount} ({disk.fstype}, {_size(disk.free)} free of "
            f"{_size(disk.total)})")


def disk_nearly_full(path: str | Path, below: int = 1 << 20) -> bool:
    """Whether the disk of ``path`` has less than ``below`` bytes free; a disk whose space
    cannot be read is not called full (the write's own error is the report)."""
    try:
        return system.disk_of(path).free < below
    except system.SystemFactError:
        return False
