"""Stalls: the heartbeat every rank writes, and the rules that call a run stalled (issue 22).

A rank that stops (a hung collective, a SIGSTOP, a dead NIC) is silent: the other ranks
wait in their next collective for NCCL's or gloo's timeout (10 to 30 minutes) and the log
just stops. Every rank therefore writes a heartbeat (step, phase, time) into
``RUN_DIR/heartbeat/rank-<N>`` at each phase change, and the supervisor calls the run
**stalled** when no rank's heartbeat has moved for ``max(k × median step time, floor)``.

Everything here is pure (file formats, rules, text); the supervisor's side that reads the
process table and runs py-spy is ``ds_wizard.launch.stall``; the rank's writer is
``ds_wizard.train.heartbeat``.
"""

from __future__ import annotations

import re
import statistics
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.base.fsio import read_input

HEARTBEAT_DIR = "heartbeat"
STALLS_DIR = "stalls"
FLIGHT_RECORDER_DIR = "flight_recorder"  # RUN_DIR/stalls/flight_recorder/: NCCL's dumps
PHASES = ("data", "forward", "backward", "step", "checkpoint")
# one heartbeat record: fixed width, written with one pwrite at offset 0 (no rename, no
# fsync: the supervisor reads the page cache), ended by "#" so a torn read is seen
BEAT_WIDTH = 160

# (k, floor) defaults: a CPU demo step takes ~0.1-1 s and start-up is done when the first
# beat is written; a 7B step on GPUs takes seconds to a minute, and NCCL's own timeout is
# 10 minutes, so 5 minutes still says "stalled" well before the job would die of it
DEFAULT_K = 10.0
CPU_FLOOR_S = 60.0
GPU_FLOOR_S = 300.0
# a checkpoint of a large model to a slow file system legitimately takes many step times
CHECKPOINT_FACTOR = 3.0
ON_STALL = ("wait", "stop")


@dataclass(frozen=True)
class Beat:
    """One rank's last heartbeat."""

    rank: int
    step: int  # the step in progress (1-based)
    phase: str
    time: float  # wall-clock seconds (time.time()) when the phase began
    pid: int
    local_rank: int
    host: str


def heartbeat_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / HEARTBEAT_DIR


def heartbeat_path(run_dir: str | Path, rank: int) -> Path:
    return heartbeat_dir(run_dir) / f"rank-{rank}"


def beat_bytes(step: int, phase: str, t: float, pid: int, local_rank: int, host: str) -> bytes:
    """The fixed-width record; a host name too long is cut (it only labels the node)."""
    body = f"{step} {phase} {t:.3f} {pid} {local_rank} {host[:80]}"
    return (body.ljust(BEAT_WIDTH - 2) + "#\n").encode("ascii", "replace")


_BEAT = re.compile(r"^(\d+) ([a-z]+) (\d+(?:\.\d+)?) (\d+) (\d+) (\S+)\s*#$")


def parse_beat(rank: int, raw: bytes) -> Beat | None:
    """A record, or None when it is torn, empty or not one."""
    m = _BEAT.match(raw.decode("ascii", "replace").rstrip("\n"))
    if m is None or m.group(2) not in PHASES:
        return None
    return Beat(rank, int(m.group(1)), m.group(2), float(m.group(3)), int(m.group(4)),
                int(m.group(5)), m.group(6))


def read_beats(run_dir: str | Path) -> dict[int, Beat]:
    """Every rank's readable heartbeat (ranks whose file is torn this instant are left out)."""
    out: dict[int, Beat] = {}
    try:
        entries = list(heartbeat_dir(run_dir).iterdir())
    except OSError:
        return out
    for p in entries:
        m = re.fullmatch(r"rank-(\d+)", p.name)
        if m is None:
            continue
        try:
            raw = read_input(p, limit=4 * BEAT_WIDTH, what="heartbeat")[:BEAT_WIDTH]
        except DsWizardError:
            continue  # being replaced, or not a regular file: no beat from it this turn
        beat = parse_beat(int(m.group(1)), raw)
        if beat is not None:
            out[beat.rank] = beat
    return out


# -- the rule ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StallPolicy:
    """Stalled when no rank progressed for max(k × median step time, floor_s)."""

    k: float = DEFAULT_K
    floor_s: float = CPU_FLOOR_S

    def threshold(self, median_step_s: float | None, in_checkpoint: bool = False) -> float:
        base = max(self.k * median_step_s, self.floor_s) if median_step_s else self.floor_s
        return base * (CHECKPOINT_FACTOR if in_checkpoint else 1.0)

    def describe(self) -> str:
        return f"max({self.k:g} × median step time, {duration(self.floor_s)})"

    def arg(self) -> str:
        """The ``--stall-after`` text that gives this policy back."""
        return f"{self.k:g}x,{self.floor_s:g}s"


def default_policy(accelerator: str) -> StallPolicy:
    return StallPolicy(DEFAULT_K, GPU_FLOOR_S if accelerator == "cuda" else CPU_FLOOR_S)


_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_stall_after(text: str, default: StallPolicy) -> StallPolicy | None:
    """``--stall-after``: ``10x`` (k), ``90s``/``5m`` (the floor), ``10x,5m`` (both), or
    ``off`` (None: no stall detection). What is not given keeps ``default``'s value."""
    raw = text.strip().lower()
    if raw in ("off", "none", "0"):
        return None
    k, floor = default.k, default.floor_s
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if not parts or len(parts) > 2:
        raise _bad_stall(text)
    for part in parts:
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(x|s|m|h)?", part)
        if m is None:
            raise _bad_stall(text)
        value, unit = float(m.group(1)), m.group(2) or "s"
        if unit == "x":
            if not 1 <= value <= 1000:
                raise DsWizardError(f"--stall-after {text!r}: k must lie in 1..1000, "
                                    f"got {value:g}", "e.g. --stall-after 10x,2m")
            k = value
        else:
            floor = value * _SECONDS[unit]
            if not 1 <= floor <= 86400:
                raise DsWizardError(f"--stall-after {text!r}: the floor must lie between "
                                    "1 s and 24 h", "e.g. --stall-after 10x,2m")
    return StallPolicy(k, floor)


def _bad_stall(text: str) -> DsWizardError:
    return DsWizardError(f"--stall-after {text!r} is not a stall rule",
                         "give K×median and/or a floor: 10x, 90s, 5m, 10x,5m, or off")


def duration(seconds: float) -> str:
    """45s, 4m, 1h 3m: how long, for a person."""
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m" + (f" {s % 60}s" if s < 600 and s % 60 else "")
    return f"{s // 3600}h {s % 3600 // 60}m"


def laggard(beats: dict[int, Beat]) -> Beat | None:
    """The rank furthest behind: lowest step, then earliest phase, then oldest beat."""
    if not beats:
        return None
    return min(beats.values(), key=lambda b: (b.step, PHASES.index(b.phase), b.time, b.rank))


def where_text(beat: Beat, single_host: bool) -> str:
    node = "" if single_host else f" (node {beat.host})"
    return f"rank {beat.rank}{node} last in {beat.phase} at step {beat.step}"


@dataclass(frozen=True)
class Stall:
    """A stall in progress (what state.json's ``stall`` holds)."""

    since: float  # wall-clock time of the last progress
    threshold_s: float
    rank: int
    host: str
    phase: str
    step: int
    single_host: bool = True
    autopsy: str | None = None  # RUN_DIR/stalls/<time>/ once collected
    odd_one_out: str | None = None  # the autopsy's verdict, one line

    def line(self, now: float) -> str:
        """``stalled for 4m: rank 3 (node b) last in backward at step 812``."""
        node = "" if self.single_host else f" (node {self.host})"
        text = (f"stalled for {duration(now - self.since)}: rank {self.rank}{node} last in "
                f"{self.phase} at step {self.step}")
        return text + (f"; {self.odd_one_out}" if self.odd_one_out else "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Stall | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except TypeError:
            return None


@dataclass
class StallTracker:
    """Feeds on heartbeat snapshots; says when the run stalls and when it moves again.

    Progress is any change of any rank's heartbeat. The median step time comes from the
    times the furthest rank's step advanced (the last ``window`` of them).
    """

    policy: StallPolicy
    expected_ranks: int
    window: int = 50
    last_progress: float | None = None
    stalled: Stall | None = None
    _seen: dict[int, tuple[int, str, float]] = field(default_factory=dict)
    _step_times: deque[float] = field(default_factory=lambda: deque(maxlen=50))
    _top_step: int = 0
    _top_at: float | None = None

    def median_step_s(self) -> float | None:
        return statistics.median(self._step_times) if self._step_times else None

    def feed(self, beats: dict[int, Beat], now: float) -> str | None:
        """"stalled", "resumed" or None (no change of verdict)."""
        snapshot = {r: (b.step, b.phase, b.time) for r, b in beats.items()}
        moved = snapshot != self._seen and any(self._seen.get(r) != v
                                               for r, v in snapshot.items())
        self._seen.update(snapshot)
        if beats:
            top = max(b.step for b in beats.values())
            if top > self._top_step:
                if self._top_at is not None:
                    self._step_times.append((now - self._top_at) / (top - self._top_step))
                self._top_step, self._top_at = top, now
        if moved:
            self.last_progress = now
            if self.stalled is not None:
                self.stalled = None
                return "resumed"
            return None
        # watch only once every rank has written a beat: start-up (imports, JIT builds,
        # engine set-up) happens before the first one and has no step time to compare to
        if self.stalled is not None or self.last_progress is None \
                or len(beats) < self.expected_ranks:
            return None
        in_ckpt = any(b.phase == "checkpoint" for b in beats.values())
        limit = self.policy.threshold(self.median_step_s(), in_ckpt)
        if now - self.last_progress < limit:
            return None
        lag = laggard(beats)
        assert lag is not None
        hosts = {b.host for b in beats.values()}
        self.stalled = Stall(since=self.last_progress, threshold_s=round(limit, 3),
                             rank=lag.rank, host=lag.host, phase=lag.phase, step=lag.step,
                             single_host=len(hosts) == 1)
        return "stalled"


# -- the autopsy's summary --------------------------------------------------------------------

# process states (psutil) in which py-spy cannot read a stack, or the rank cannot progress
ABNORMAL_STATES = ("stopped", "tracing-stop", "zombie", "dead", "disk-sleep")


@dataclass(frozen=True)
class RankReport:
    """What the autopsy found about one rank."""

    rank: int
    host: str
    pid: int | None
    state: str | None  # psutil's status(), None when the process is not on this node
    stack: str | None = None  # py-spy's dump
    error: str | None = None  # why there is no stack
    beat: Beat | None = None


_FRAME = re.compile(r"^\s+(\S.*?) \((.+?):(\d+)\)\s*$")


def main_thread_frames(dump: str) -> list[tuple[str, str, int]]:
    """(function, file, line) of the main thread in a ``py-spy dump``, innermost first."""
    frames: list[tuple[str, str, int]] = []
    current: list[tuple[str, str, int]] | None = None
    first: list[tuple[str, str, int]] | None = None
    header = ""
    for line in dump.splitlines():
        if line.startswith("Thread "):
            if current is not None and first is None:
                first = current
            if current is not None and '"MainThread"' in header:
                return current
            header, current = line, []
            continue
        m = _FRAME.match(line)
        if m and current is not None:
            current.append((m.group(1), m.group(2), int(m.group(3))))
    if current is not None and '"MainThread"' in header:
        return current
    return first or current or frames


def wait_point(report: RankReport) -> str:
    """Where a rank waits, for grouping: its innermost frame and the training loop's line."""
    if report.stack is None:
        state = report.state or "not examined"
        return f"process {state}" + ("" if report.state else f" ({report.error})"
                                     if report.error else "")
    frames = main_thread_frames(report.stack)
    if not frames:
        return "no Python frame"
    inner = f"{frames[0][0]} ({_short(frames[0][1])}:{frames[0][2]})"
    own = next((f for f in frames if "ds_wizard" in f[1]), None)
    if own is not None and own != frames[0]:
        inner += f" ← {own[0]} ({_short(own[1])}:{own[2]})"
    return inner


def _short(path: str) -> str:
    for marker in ("site-packages/", "ds_wizard/"):
        if marker in path:
            cut = path.index(marker) + (len(marker) if marker == "site-packages/" else 0)
            return path[cut:]
    return path


@dataclass(frozen=True)
class AutopsySummary:
    groups: list[tuple[str, list[int]]]  # wait point → ranks, largest group first
    odd_rank: int | None
    odd_reason: str | None
    not_examined: list[str]  # nodes whose stacks could not be collected here
    flight_recorder: str | None = None  # torchfrtrace's answer, or why there is none

    def odd_line(self) -> str | None:
        if self.odd_rank is None:
            return None
        return f"odd one out: rank {self.odd_rank} ({self.odd_reason})"

    def text(self, stall_line: str) -> str:
        lines = [stall_line, ""]
        for where, ranks in self.groups:
            lines.append(f"{len(ranks)} rank(s) {', '.join(map(str, ranks))}: {where}")
        lines.append("")
        lines.append(self.odd_line() or "no odd one out: every rank waits in the same place")
        if self.not_examined:
            lines.append("not examined (py-spy reads only this node's processes): "
                         + "; ".join(self.not_examined))
        if self.flight_recorder:
            lines += ["", "NCCL flight recorder:", self.flight_recorder]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {"groups": [{"where": w, "ranks": r} for w, r in self.groups],
                "odd_rank": self.odd_rank, "odd_reason": self.odd_reason,
                "not_examined": self.not_examined, "flight_recorder": self.flight_recorder}


def summarize_autopsy(reports: list[RankReport], lag: Beat | None,
                      flight_recorder: str | None = None,
                      world_size: int | None = None) -> AutopsySummary:
    """Group the ranks by where they wait and name the odd one out.

    The odd one out, by the strongest evidence first: a rank whose process cannot run
    (stopped, zombie, stuck in the kernel); the one rank waiting somewhere else when at
    least three ranks were read; else the heartbeat's laggard.
    """
    groups: dict[str, list[int]] = {}
    for r in sorted(reports, key=lambda r: r.rank):
        groups.setdefault(wait_point(r), []).append(r.rank)
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[1][0]))
    not_examined = [f"node {h}" for h in sorted({r.host for r in reports if r.state is None})]
    if world_size is not None:
        # ranks whose heartbeat never reached this node (another node's disk, or a rank
        # that never started): nothing is known about them here
        unseen = sorted(set(range(world_size)) - {r.rank for r in reports})
        if unseen:
            not_examined.append(f"rank(s) {', '.join(map(str, unseen))} (no heartbeat "
                                "visible on this node)")
    odd, why = None, None
    abnormal = [r for r in reports if r.state in ABNORMAL_STATES]
    if len(abnormal) == 1 or (abnormal and len(abnormal) < len(reports)):
        r = min(abnormal, key=lambda r: r.rank)
        odd, why = r.rank, f"its process is {r.state}: it cannot reach the collective " \
                           "the others wait in"
    else:
        read = [r for r in reports if r.stack is not None]
        where_read: dict[str, list[int]] = {}
        for r in read:
            where_read.setdefault(wait_point(r), []).append(r.rank)
        singles = [ranks[0] for ranks in where_read.values() if len(ranks) == 1]
        if len(read) >= 3 and len(singles) == 1 and len(where_read) > 1:
            odd = singles[0]
            why = f"it waits elsewhere than the other {len(read) - 1}"
        elif lag is not None:
            odd = lag.rank
            why = f"the furthest behind by heartbeat: last in {lag.phase} at step {lag.step}"
    return AutopsySummary(ordered, odd, why, not_examined, flight_recorder)
