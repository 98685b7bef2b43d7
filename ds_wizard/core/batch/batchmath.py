"""DeepSpeed's batch-size arithmetic, reproduced exactly, plus a solver.

DeepSpeed resolves the triplet (train_batch_size, train_micro_batch_size_per_gpu,
gradient_accumulation_steps) in ``deepspeed/runtime/config.py``:
``_set_batch_related_parameters`` derives the missing values with floor division, then
``_batch_assertion`` checks them. :func:`resolve` follows the same branches in the same
order and produces the same messages, so a verdict here is DeepSpeed's verdict before any
rank is started. A property test drives both side by side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ds_wizard.core.base.limits import MAX_GLOBAL_BATCH

MISSING_BOTH = "Either train_batch_size or train_micro_batch_size_per_gpu needs to be provided"
# Python's own text for `x // 0`: DeepSpeed does not guard these divisions, so it dies
# with a ZeroDivisionError and we report the same thing.
ZERO_DIVISION = "integer division or modulo by zero"
# The largest batch value anyone means: a bigger one is a typo (an extra digit). The CLI's
# checker, the preset schema and the wizard's fields all refuse values above it.
MAX_BATCH_VALUE = MAX_GLOBAL_BATCH  # core/base/limits.py holds every numeric limit


def too_large(label: str, value: int) -> str | None:
    """The one message for a batch value over :data:`MAX_BATCH_VALUE`, else None."""
    if value > MAX_BATCH_VALUE:
        return (f"{label} is {value}, implausibly large (over {MAX_BATCH_VALUE:,}); "
                "check for an extra digit")
    return None


@dataclass(frozen=True)
class Resolution:
    """The outcome of DeepSpeed's batch resolution for one world size."""

    world_size: int
    train_batch_size: int | None
    micro_batch: int | None
    grad_accum: int | None
    derived: tuple[str, ...] = ()
    error: str | None = None
    error_type: str | None = None  # "AssertionError" | "ZeroDivisionError"

    @property
    def valid(self) -> bool:
        return self.error is None

    @property
    def formula(self) -> str:
        """``128 = 4 × 8 × 4`` when valid, ``16 != 4 × 8 × 4`` when not."""
        if self.train_batch_size is None or self.micro_batch is None or self.grad_accum is None:
            return ""
        sign = "=" if self.valid else "!="
        return (
            f"{self.train_batch_size} {sign} {self.micro_batch} × {self.grad_accum} × "
            f"{self.world_size}"
        )


def _floordiv(a: int, b: int) -> int:
    if b == 0:
        raise ZeroDivisionError(ZERO_DIVISION)
    return a // b


def resolve(
    train_batch_size: int | None,
    micro_batch: int | None,
    grad_accum: int | None,
    world_size: int,
) -> Resolution:
    """Resolve and check the triplet the way DeepSpeed does.

    ``world_size`` is the data-parallel size (see :func:`data_parallel_size`).
    """
    t, m, g = train_batch_size, micro_batch, grad_accum
    derived: list[str] = []
    try:
        if t is not None and m is not None and g is not None:
            pass
        elif t is not None and m is not None:
            g = _floordiv(_floordiv(t, m), world_size)
            derived.append("gradient_accumulation_steps")
        elif t is not None and g is not None:
            m = _floordiv(_floordiv(t, world_size), g)
            derived.append("train_micro_batch_size_per_gpu")
        elif m is not None and g is not None:
            t = m * g * world_size
            derived.append("train_batch_size")
        elif t is not None:
            g = 1
            m = _floordiv(t, world_size)
            derived += ["gradient_accumulation_steps", "train_micro_batch_size_per_gpu"]
        elif m is not None:
            t = m * world_size
            g = 1
            derived += ["train_batch_size", "gradient_accumulation_steps"]
        else:
            return Resolution(world_size, t, m, g, (), MISSING_BOTH, "AssertionError")
    except ZeroDivisionError:
        return Resolution(world_size, t, m, g, tuple(derived), ZERO_DIVISION, "ZeroDivisionError")

    assert t is not None and m is not None and g is not None
    error = None
    if not t > 0:
        error = f"Train batch size: {t} has to be greater than 0"
    elif not m > 0:
        error = f"Micro batch size per gpu: {m} has to be greater than 0"
    elif not g > 0:
        error = f"Gradient accumulation steps: {g} has to be greater than 0"
    elif t != m * g * world_size:
        error = (
            "Check batch related parameters. train_batch_size is not equal to "
            "micro_batch_per_gpu * gradient_acc_step * world_size "
            f"{t} != {m} * {g} * {world_size}"
        )
    return Resolution(
        world_size, t, m, g, tuple(derived), error, "AssertionError" if error else None
    )


def data_parallel_size(
    total_ranks: int,
    tensor_parallel: int = 1,
    pipeline_parallel: int = 1,
    sequence_parallel: int = 1,
) -> int:
    """Ranks that each see different data: total / (tp × pp × sp).

    DeepSpeed uses this number, not the raw world size, in the batch formula.
    """
    for name, value in (
        ("total ranks", total_ranks),
        ("tensor parallel", tensor_parallel),
        ("pipeline parallel", pipeline_parallel),
        ("sequence parallel", sequence_parallel),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    model_parallel = tensor_parallel * pipeline_parallel * sequence_parallel
    if total_ranks % model_parallel:
        raise ValueError(
            f"{total_ranks} ranks do not divide into tensor {tensor_parallel} × pipeline "
            f"{pipeline_parallel} × sequence {sequence_parallel} = {model_parallel}; "
            "choose degrees whose product divides the number of GPUs"
        )
    return total_ranks // model_parallel


@dataclass(frozen=True)
class Solution:
    """Valid (micro, gas) pairs for a target global batch."""

    world_size: int
    target: int
    pairs: list[tuple[int, int]] = field(default_factory=list)
    lower: int | None = None  # nearest valid global batch below target
    upper: int | None = None  # nearest valid global batch above target

    @property
    def exact(self) -> bool:
        return bool(self.pairs)


def _pairs_for(global_batch: int, world_size: int, max_micro: int, max_gas: int) -> list:
    if global_batch <= 0 or global_batch % world_size:
        return []
    per_rank = global_batch // world_size
    if per_rank > max_micro * max_gas:
        return []
    # In a pair (m, g) with m × g = per_rank, the smaller of the two is at most
    # sqrt(per_rank) and within both limits: try only those, and take both orders.
    pairs = set()
    for d in range(1, min(max_micro, max_gas, math.isqrt(per_rank)) + 1):
        if per_rank % d == 0:
            e = per_rank // d
            if e <= max_gas:
                pairs.add((d, e))
            if e <= max_micro:
                pairs.add((e, d))
    return list(pairs)


def _nearest_below(k: int, max_micro: int, max_gas: int) -> int | None:
    """The largest m × g <= k with m <= max_micro and g <= max_gas (None when k < 1).

    For each m the best g is min(max_gas, k // m), so one pass over the smaller factor
    finds it, without walking the multiples in between.
    """
    if k < 1:
        return None
    small, large = sorted((max_micro, max_gas))
    if k >= small * large:
        return small * large
    if k <= large:
        return k  # 1 × k
    # every m below k / large reaches only m × large: of those the last one is the best
    first = max(1, -(-k // large) - 1)
    return max(m * min(large, k // m) for m in range(first, min(small, k) + 1))


def _nearest_above(k: int, max_micro: int, max_gas: int) -> int | None:
    """The smallest m × g >= k with m <= max_micro and g <= max_gas (None when none)."""
    small, large = sorted((max_micro, max_gas))
    if k > small * large:
        return None
    k = max(k, 1)
    if k <= large:
        return k  # 1 × k
    first = -(-k // large)
    return min(m * -(-k // m) for m in range(first, small + 1))


def solve(
    world_size: int,
    target_global: int,
    max_micro: int = 1024,
    max_gas: int = 1024,
) -> Solution:
    """Every (micro, gas) with micro × gas × world_size == target_global within the limits.

    When there is none, the nearest valid global batches on both sides are proposed.
    Pairs are ordered by micro-batch, largest first, since a larger micro-batch usually
    runs faster when it fits. The work is bounded by the smaller limit and by sqrt(target),
    whatever the target, so any input answers in milliseconds (the wizard calls this on
    every keystroke).
    """
    if world_size < 1:
        raise ValueError(f"world size must be >= 1, got {world_size}")
    if target_global < 1:
        raise ValueError(f"target global batch must be >= 1, got {target_global}")
    if max_micro < 1 or max_gas < 1:
        raise ValueError("max_micro and max_gas must be >= 1")
    pairs = sorted(_pairs_for(target_global, world_size, max_micro, max_gas), reverse=True)
    if pairs:
        return Solution(world_size, target_global, pairs, target_global, target_global)
    # valid globals are world_size × k where k = micro × gas within the limits
    below = _nearest_below(target_global // world_size, max_micro, max_gas)
    above = _nearest_above(-(-target_global // world_size), max_micro, max_gas)
    return Solution(world_size, target_global, [],
                    None if below is None else below * world_size,
                    None if above is None else above * world_size)


def pick_grad_accum(world_size: int, micro: int, target_global: int) -> tuple[int, str]:
    """Gradient accumulation that brings micro × gas × ws closest to the target.

    Returns the value and a sentence saying why, for summaries.
    """
    if micro < 1 or world_size < 1 or target_global < 1:
        raise ValueError("micro, world size and target must all be >= 1")
    per_step = micro * world_size
    exact, rem = divmod(target_global, per_step)
    if rem == 0:
        return exact, (
            f"{target_global} / ({micro} × {world_size}) = {exact} reaches the target exactly"
        )
    low = max(1, exact)
    high = exact + 1
    low_gap = abs(low * per_step - target_global)
    gas = low if low_gap <= abs(high * per_step - target_global) else high
    return gas, (
        f"{target_global} is not a multiple of {micro} × {world_size} = {per_step}; "
        f"{gas} gives {gas * per_step}, the nearest reachable global batch"
    )
