"""The supervisor's stall watch and autopsy (issue 22); the rules are ``core.runs.stall``.

    watch = StallWatch(run_dir, policy, expected_ranks=2)
    event = watch.poll()          # about once a second: "stalled" | "resumed" | None
    autopsy = collect_autopsy(run_dir, watch.beats, watch.stalled)   # RUN_DIR/stalls/<time>/

The autopsy reads every local rank's Python stack with ``py-spy dump`` (a stopped process
cannot be read, so its psutil state is recorded instead), groups the ranks by where they
wait and names the odd one out. On CUDA launches PyTorch's NCCL flight recorder dumps into
``RUN_DIR/stalls/flight_recorder/`` (:func:`flight_recorder_env`); ``torchfrtrace`` reads
those dumps where it is installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from ds_wizard.core.base.fsio import atomic_write_text
from ds_wizard.core.runs.stall import (
    FLIGHT_RECORDER_DIR,
    STALLS_DIR,
    AutopsySummary,
    Beat,
    RankReport,
    Stall,
    StallPolicy,
    StallTracker,
    laggard,
    read_beats,
    summarize_autopsy,
)

PY_SPY_TIMEOUT_S = 20.0
FR_BUFFER = "2000"  # collectives each rank remembers (PyTorch's docs use 2000)


def flight_recorder_env(run_dir: Path, environ: dict[str, str]) -> dict[str, str]:
    """PyTorch's NCCL flight-recorder variables for a CUDA launch, dumps in the run dir.

    Both spellings (checked against torch 2.13: ``distributed_c10d.py`` reads
    ``TORCH_FR_BUFFER_SIZE`` falling back to ``TORCH_NCCL_TRACE_BUFFER_SIZE``; libtorch
    knows ``TORCH_FR_DUMP_TEMP_FILE`` and ``TORCH_NCCL_DEBUG_INFO_TEMP_FILE``), so older
    and newer torch both record. Nothing the user set is overridden. The recorder does not
    dump under ``TORCH_NCCL_ASYNC_ERROR_HANDLING=1``; 3 (torchtitan's choice) tears down
    without killing the process first.
    """
    prefix = str(run_dir.resolve() / STALLS_DIR / FLIGHT_RECORDER_DIR / "nccl_trace_rank_")
    want = {
        "TORCH_NCCL_TRACE_BUFFER_SIZE": FR_BUFFER,
        "TORCH_FR_BUFFER_SIZE": FR_BUFFER,
        "TORCH_NCCL_DUMP_ON_TIMEOUT": "1",
        "TORCH_NCCL_DEBUG_INFO_TEMP_FILE": prefix,
        "TORCH_FR_DUMP_TEMP_FILE": prefix,
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": "3",
    }
    return {k: v for k, v in want.items() if k not in environ}


class StallWatch:
    """Reads the heartbeats once a second and feeds :class:`StallTracker`."""

    def __init__(self, run_dir: Path, policy: StallPolicy, expected_ranks: int,
                 every_s: float = 1.0) -> None:
        self.run_dir = run_dir
        self.tracker = StallTracker(policy, expected_ranks)
        self.every_s = every_s
        self.beats: dict[int, Beat] = {}
        self._last = 0.0
        # a resumed run's directory holds the last launch's beats: they say nothing about
        # this one, whose ranks are still starting. A record keeps its time to the
        # millisecond (rounded), so a beat written at once may read up to 0.5 ms early.
        self.since = time.time() - 0.001

    @property
    def stalled(self) -> Stall | None:
        return self.tracker.stalled

    def poll(self, now: float | None = None) -> str | None:
        mono = time.monotonic()
        if mono - self._last < self.every_s:
            return None
        self._last = mono
        self.beats = {r: b for r, b in read_beats(self.run_dir).items() if b.time >= self.since}
        return self.tracker.feed(self.beats, time.time() if now is None else now)


def py_spy() -> str | None:
    """The py-spy executable: next to this Python (the venv), else on PATH."""
    here = Path(sys.executable).parent / "py-spy"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which("py-spy")


def process_state(pid: int | None) -> str | None:
    """psutil's status of ``pid`` ("running", "sleeping", "stopped", …), "gone" if it
    exited."""
    if pid is None:
        return None
    import psutil

    try:
        return str(psutil.Process(pid).status())
    except psutil.NoSuchProcess:
        return "gone"
    except psutil.Error as exc:
        return f"unreadable ({exc.__class__.__name__})"


def read_stack(pid: int, exe: str | None) -> tuple[str | None, str | None]:
    """(py-spy's dump, None) or (None, why not)."""
    if exe is None:
        return None, "py-spy is not installed (pip install py-spy)"
    try:
        done = subprocess.run([exe, "dump", "--pid", str(pid)], capture_output=True,
                              text=True, timeout=PY_SPY_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, f"py-spy dump took longer than {PY_SPY_TIMEOUT_S:.0f} s"
    except OSError as exc:
        return None, f"cannot run py-spy: {exc.strerror or exc}"
    if done.returncode != 0 or not done.stdout.strip():
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return None, f"py-spy: {why}"
    return done.stdout, None


def flight_recorder_report(run_dir: Path) -> str | None:
    """``torchfrtrace``'s reading of the NCCL dumps, or why there is none; None when the
    launch recorded nothing (CPU ranks)."""
    fr = run_dir / STALLS_DIR / FLIGHT_RECORDER_DIR
    dumps = sorted(fr.glob("nccl_trace_rank_*")) if fr.is_dir() else []
    if not dumps:
        return None
    exe = shutil.which("torchfrtrace") or str(Path(sys.executable).parent / "torchfrtrace")
    if not os.access(exe, os.X_OK):
        return f"{len(dumps)} dump(s) in {fr}; torchfrtrace is not installed to read them"
    try:
        done = subprocess.run([exe, str(fr), "--prefix", "nccl_trace_rank_"],
                              capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)
    except (subprocess.TimeoutExpired, OSError) as exc:
        return f"{len(dumps)} dump(s) in {fr}; torchfrtrace failed: {exc}"
    return (done.stdout or done.stderr).strip()[-4000:] or "torchfrtrace printed nothing"


def autopsy_dir(run_dir: Path) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = run_dir / STALLS_DIR / stamp
    n = 1
    while out.exists():
        n += 1
        out = run_dir / STALLS_DIR / f"{stamp}-{n}"
    out.mkdir(parents=True)
    return out


def collect_autopsy(run_dir: Path, beats: dict[int, Beat], stall: Stall,
                    host: str | None = None) -> tuple[Path, AutopsySummary]:
    """Every local rank's stack (or process state) into RUN_DIR/stalls/<time>/, with
    ``summary.txt`` and ``summary.json``. Ranks on other nodes are listed as not examined:
    py-spy reads only this machine's processes."""
    here = (host or socket.gethostname()).split(".")[0]
    out = autopsy_dir(run_dir)
    exe = py_spy()
    reports: list[RankReport] = []
    for rank in sorted(beats):
        b = beats[rank]
        if b.host != here:
            reports.append(RankReport(rank, b.host, b.pid, None,
                                      error=f"on node {b.host}", beat=b))
            continue
        state = process_state(b.pid)
        stack, error = None, None
        if state == "stopped" or state == "tracing-stop":
            error = f"process {state}: py-spy cannot read a stopped process"
        elif state == "gone":
            error = "the process has exited"
        else:
            stack, error = read_stack(b.pid, exe)
            if stack is None:
                state = process_state(b.pid)  # it may have stopped while being read
        reports.append(RankReport(rank, b.host, b.pid, state, stack, error, b))
        text = (f"rank {rank} · pid {b.pid} · node {b.host} · process state {state}\n"
                f"heartbeat: step {b.step}, {b.phase}, "
                f"{datetime.fromtimestamp(b.time).isoformat(timespec='seconds')}\n\n"
                + (stack if stack is not None else f"no stack: {error}\n"))
        atomic_write_text(out / f"rank-{rank}.txt", text)
    summary = summarize_autopsy(reports, laggard(beats), flight_recorder_report(run_dir),
                                world_size=_world_size(run_dir))
    now = time.time()
    atomic_write_text(out / "summary.txt", summary.text(stall.line(now)))
    data = {"stall": stall.to_dict(), "line": stall.line(now), **summary.to_dict(),
            "ranks": [{"rank": r.rank, "host": r.host, "pid": r.pid, "state": r.state,
                       "stack": r.stack is not None, "error": r.error} for r in reports]}
    atomic_write_text(out / "summary.json", json.dumps(data, indent=2) + "\n")
    return out, summary


def _world_size(run_dir: Path) -> int | None:
    """The run's ranks, from run.json (None when it cannot be read)."""
    from ds_wizard.core.runs.rundir import RunError, load_run_json

    try:
        ws = load_run_json(run_dir).get("world_size")
    except RunError:
        return None
    return ws if isinstance(ws, int) and ws > 0 else None


def with_autopsy(stall: Stall, where: Path, summary: AutopsySummary) -> Stall:
    """The stall as state.json records it once the autopsy is in."""
    return replace(stall, autopsy=str(where), odd_one_out=summary.odd_line())


def stop_processes(pids: list[int]) -> None:
    """SIGCONT first: a stopped process would otherwise hold SIGTERM until resumed."""
    import signal

    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGCONT)
