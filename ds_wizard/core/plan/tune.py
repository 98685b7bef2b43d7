"""``ds-wizard tune``, the pure part: which micro-batches to try, in which order, and which wins.

The global batch never changes: a candidate is a micro-batch that divides the global batch
over the data-parallel size, with the accumulation that absorbs the rest, under one ZeRO
strategy. :func:`search` decides the order from the plan's own choice and a ``measure``
callback (the launch package runs each candidate as a short real run; tests pass a
stand-in); :func:`choose` picks the fastest candidate whose measured peak is within the
limit.

    cands = candidates(16, 2, [Strategy(2)])          # micro 1, 2, 4, 8 at 16 = m × g × 2
    found = search(cands, start_micro=4, measure=run_one)
    best = choose(found)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.plan.memory import GiB, Strategy

# statuses of a measured candidate
FITS = "fits"
OVER = "over the limit"  # ran, but its measured peak is above the limit
OOM = "does not fit"  # ran out of memory (CUDA OOM, a host-memory limit, the OOM killer)
FAILED = "failed"  # ended for another reason (shown with its note); not a memory verdict
STOPPED = "stopped"  # Ctrl-C: what it measured so far is kept, the search ends

# a smaller micro-batch is tried further only when it beats the best so far by this much:
# run-to-run noise on a shared machine is about this size
SPEED_MARGIN = 0.05
DEFAULT_MAX_CANDIDATES = 5


@dataclass(frozen=True)
class Candidate:
    """One configuration to measure: micro × accumulation × world, and a ZeRO strategy."""

    micro_batch: int
    grad_accum: int
    world_size: int
    strategy: Strategy

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.grad_accum * self.world_size

    @property
    def label(self) -> str:
        return (f"{self.micro_batch} × {self.grad_accum} × {self.world_size}, "
                f"{self.strategy.label}")

    def to_dict(self) -> dict[str, Any]:
        return {"micro_batch": self.micro_batch, "grad_accum": self.grad_accum,
                "world_size": self.world_size, "global_batch": self.global_batch,
                "zero_stage": self.strategy.zero_stage,
                "offload_optimizer": self.strategy.offload_optimizer,
                "offload_param": self.strategy.offload_param, "label": self.label}


@dataclass(frozen=True)
class Measurement:
    """What one short run of a candidate showed (bytes; tokens per second over all ranks)."""

    candidate: Candidate
    status: str
    predicted_peak: int  # the memory model's per-rank peak, comparable with measured_peak
    measured_peak: int | None = None  # the largest rank's peak
    rank_peaks: tuple[int, ...] = ()
    tokens_per_s: float | None = None  # steady: the warm-up step excluded
    steps: int = 0  # steps timed (after warm-up)
    elapsed_s: float = 0.0  # the candidate's wall time, start-up included
    note: str = ""
    run_dir: str | None = None

    @property
    def fits(self) -> bool:
        return self.status == FITS

    @property
    def error_pct(self) -> float | None:
        """(predicted − measured) / measured, in percent; positive: the model overestimates."""
        if not self.measured_peak or self.predicted_peak <= 0:
            return None
        return round(100.0 * (self.predicted_peak - self.measured_peak) / self.measured_peak, 1)

    def to_dict(self) -> dict[str, Any]:
        return {**self.candidate.to_dict(), "status": self.status, "fits": self.fits,
                "predicted_peak_bytes": self.predicted_peak,
                "measured_peak_bytes": self.measured_peak,
                "rank_peaks_bytes": list(self.rank_peaks),
                "error_pct": self.error_pct, "tokens_per_s": self.tokens_per_s,
                "steps_timed": self.steps, "elapsed_s": round(self.elapsed_s, 1),
                "note": self.note, "run_dir": self.run_dir}


class TuneError(DsWizardError):
    """Nothing to tune (no micro-batch divides the global batch), or bad tune input."""


def micro_batches(global_batch: int, world_size: int) -> list[int]:
    """Every micro-batch m with global_batch = m × g × world_size for a whole g, ascending."""
    if world_size < 1 or global_batch < 1:
        raise TuneError(f"global batch {global_batch} and world size {world_size} must be "
                        "at least 1")
    if global_batch % world_size:
        raise TuneError(f"global batch {global_batch} cannot be split over {world_size} "
                        f"rank(s)", f"give --global-batch as a multiple of {world_size}")
    per_rank = global_batch // world_size
    return [m for m in range(1, per_rank + 1) if per_rank % m == 0]


def candidates(global_batch: int, world_size: int,
               strategies: Sequence[Strategy]) -> list[Candidate]:
    """All candidates at this global batch, strategy by strategy, micro-batch ascending."""
    per_rank = global_batch // world_size if world_size else 0
    return [Candidate(m, per_rank // m, world_size, s)
            for s in strategies for m in micro_batches(global_batch, world_size)]


def start_index(micros: Sequence[int], start_micro: int) -> int:
    """Where the search starts: the plan's micro-batch, else the largest below it."""
    below = [i for i, m in enumerate(micros) if m <= start_micro]
    return below[-1] if below else 0


def search(cands: Sequence[Candidate], start_micro: int,
           measure: Callable[[Candidate], Measurement],
           max_candidates: int = DEFAULT_MAX_CANDIDATES) -> list[Measurement]:
    """Measure candidates in the order the search decides; every measurement, in order.

    Per strategy, over the micro-batches sorted ascending, starting at the plan's choice:
    memory grows with the micro-batch, so bisection finds the largest that fits (upwards
    when the start fits, downwards when it does not); then one step below the start is
    measured too, and smaller ones while each is faster than the best so far by
    :data:`SPEED_MARGIN` (a smaller micro-batch can win on a busy CPU, or through less
    padding). A typical search measures 3 to 5 candidates. A STOPPED measurement ends the
    search; at most ``max_candidates`` in all.
    """
    if max_candidates < 1:
        raise TuneError(f"--max-candidates must be at least 1, got {max_candidates}")
    done: list[Measurement] = []
    by_strategy: dict[Strategy, list[Candidate]] = {}
    for c in cands:
        by_strategy.setdefault(c.strategy, []).append(c)
    for group in by_strategy.values():
        group = sorted(group, key=lambda c: c.micro_batch)
        if not _search_one(group, start_micro, measure, done, max_candidates):
            break
    return done


class _Stop(Exception):
    """The search ends here: stopped by the user, or out of candidates to spend."""


def _search_one(group: list[Candidate], start_micro: int,
                measure: Callable[[Candidate], Measurement], done: list[Measurement],
                max_candidates: int) -> bool:
    """One strategy's search; False when the whole search must end."""
    seen: dict[int, Measurement] = {}

    def at(i: int) -> Measurement:
        if i in seen:
            return seen[i]
        if len(done) >= max_candidates:
            raise _Stop
        m = measure(group[i])
        done.append(m)
        seen[i] = m
        if m.status == STOPPED:
            raise _Stop
        return m

    def fits(i: int) -> bool:
        return at(i).fits

    s = start_index([c.micro_batch for c in group], start_micro)
    try:
        # bisect between the last known to fit (lo) and the first known not to (hi):
        # above the start when it fits, below it when it does not
        lo, hi = (s, len(group)) if fits(s) else (-1, s)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if fits(mid):
                lo = mid
            else:
                hi = mid
        best = lo
        if best < 0:
            return True  # nothing fits with this strategy; the next may
        # search down from the start too: a smaller micro-batch may be faster; go on
        # down only while each one beats every other that fits
        i = min(s, best) - 1
        while i >= 0:
            m = at(i)
            if not (m.fits and _faster(m, seen, SPEED_MARGIN)):
                break
            i -= 1
    except _Stop:
        return False
    return True


def _faster(m: Measurement, seen: dict[int, Measurement], margin: float) -> bool:
    """``m`` beats every other fitting measurement by ``margin``."""
    others = [o.tokens_per_s or 0.0 for o in seen.values() if o.fits and o is not m]
    return bool(m.tokens_per_s) and all((m.tokens_per_s or 0.0) > o * (1 + margin)
                                        for o in others)


def choose(measurements: Sequence[Measurement]) -> Measurement | None:
    """The fastest candidate that fits (its measured peak within the limit); None if none."""
    fitting = [m for m in measurements if m.fits and m.tokens_per_s]
    if not fitting:
        return None
    return max(fitting, key=lambda m: (m.tokens_per_s or 0.0, -m.candidate.micro_batch))


def verdict(ran_ok: bool, out_of_memory: bool, measured_peak: int | None,
            limit: int | None) -> str:
    """The status of a finished candidate run."""
    if out_of_memory:
        return OOM
    if not ran_ok:
        return FAILED
    if limit is not None and measured_peak is not None and measured_peak > limit:
        return OVER
    return FITS


# what a rank's log says when it ran out of memory (CUDA, the CPU allocator, Python, the
# kernel's OOM killer as the launcher reports it)
OOM_MARKERS = ("CUDA out of memory", "OutOfMemoryError", "DefaultCPUAllocator: can't allocate",
               "MemoryError", "Cannot allocate memory", "out of memory",
               "exits with return code = -9")


def out_of_memory(lines: Sequence[str]) -> str | None:
    """The log line that shows an out-of-memory end, or None."""
    for line in lines:
        if any(marker in line for marker in OOM_MARKERS):
            return line.strip()[:200]
    return None


@dataclass(frozen=True)
class TuneResult:
    """A whole tune: every measurement, the choice and where its config went."""

    preset: str
    world_size: int
    global_batch: int
    device: str  # "cuda" | "cpu"
    machine: str  # "NVIDIA H100 80GB HBM3" or the host CPU
    limit: int | None  # the per-rank bytes a candidate may peak at (headroom applied)
    limit_source: str
    headroom: float
    start_micro: int
    measurements: tuple[Measurement, ...]
    chosen: Measurement | None
    config_path: str | None = None
    wall_s: float = 0.0
    interrupted: bool = False
    notes: tuple[str, ...] = field(default=())
    dry_run: bool = False  # the plan of a tune: no measurement, nothing written
    preset_saved: str | None = None  # the user preset --save-preset wrote

    @property
    def peak_kind(self) -> str:
        return ("peak allocator memory per GPU (max reserved)" if self.device == "cuda"
                else "peak RSS per CPU rank")

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "world_size": self.world_size,
                "global_batch": self.global_batch, "device": self.device,
                "machine": self.machine, "limit_bytes": self.limit,
                "limit_source": self.limit_source, "headroom": self.headroom,
                "peak_kind": self.peak_kind, "start_micro_batch": self.start_micro,
                "candidates": [m.to_dict() for m in self.measurements],
                "chosen": self.chosen.to_dict() if self.chosen else None,
                "config": self.config_path, "wall_s": round(self.wall_s, 1),
                "interrupted": self.interrupted, "notes": list(self.notes),
                "dry_run": self.dry_run, "preset_saved": self.preset_saved}


def table_rows(result: TuneResult) -> list[dict[str, str]]:
    """The result table, one row per measured candidate, as display strings."""
    rows = []
    for m in result.measurements:
        c = m.candidate
        err = m.error_pct
        rows.append({
            "micro × accum × world": f"{c.micro_batch} × {c.grad_accum} × {c.world_size}",
            "stage": c.strategy.label,
            "predicted": f"{m.predicted_peak / GiB:.2f} GiB",
            "measured": f"{m.measured_peak / GiB:.2f} GiB" if m.measured_peak else "-",
            "error": f"{err:+.1f}%" if err is not None else "-",
            "tokens/s": f"{m.tokens_per_s:,.0f}" if m.tokens_per_s else "-",
            "verdict": ("✔ chosen" if m is result.chosen else m.status)
            + (f" ({m.note})" if m.note and not m.fits else ""),
        })
    return rows


def upper_bound_s(per_candidate_s: float, started: int, max_candidates: int,
                  total: int) -> float:
    """The most the rest of the tune can take after ``started`` candidates (the current
    one counted as done): every candidate it may still run of ``total``, each as slow as
    ``per_candidate_s`` (the slowest so far, or a first guess)."""
    left = max(0, min(max_candidates, total) - started)
    return left * per_candidate_s


def strategy_from(stage: int, offload_optimizer: bool = False,
                  offload_param: bool = False) -> Strategy:
    return Strategy(stage, offload_optimizer, offload_param)


def measurement_from_dict(data: dict[str, Any]) -> Measurement:
    """A Measurement back from :meth:`Measurement.to_dict` (the machine record keeps them)."""
    cand = Candidate(int(data["micro_batch"]), int(data["grad_accum"]),
                     int(data["world_size"]),
                     Strategy(int(data["zero_stage"]), bool(data.get("offload_optimizer")),
                              bool(data.get("offload_param"))))
    return Measurement(cand, str(data["status"]), int(data.get("predicted_peak_bytes") or 0),
                       data.get("measured_peak_bytes"),
                       tuple(data.get("rank_peaks_bytes") or ()), data.get("tokens_per_s"),
                       int(data.get("steps_timed") or 0), float(data.get("elapsed_s") or 0.0),
                       str(data.get("note") or ""), data.get("run_dir"))
