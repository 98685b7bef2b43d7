"""core.batch.solve: bounded work, and the same answers as the old exhaustive walk."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from ds_wizard.core.batch.batchmath import MAX_BATCH_VALUE, solve, too_large


def _exhaustive(world_size: int, target: int, max_micro: int, max_gas: int):
    """The algorithm solve() used before: try every multiple of world_size in turn."""

    def pairs_for(g: int) -> list[tuple[int, int]]:
        if g <= 0 or g % world_size:
            return []
        per_rank = g // world_size
        return [(m, per_rank // m) for m in range(1, min(per_rank, max_micro) + 1)
                if per_rank % m == 0 and per_rank // m <= max_gas]

    pairs = sorted(pairs_for(target), reverse=True)
    if pairs:
        return pairs, target, target
    lower = upper = None
    below = (target // world_size) * world_size
    while below >= world_size:
        if pairs_for(below):
            lower = below
            break
        below -= world_size
    above = -(-target // world_size) * world_size
    while above <= world_size * max_micro * max_gas:
        if pairs_for(above):
            upper = above
            break
        above += world_size
    return [], lower, upper


@settings(max_examples=400, deadline=None)
@given(ws=st.integers(1, 12), target=st.integers(1, 2000), max_micro=st.integers(1, 24),
       max_gas=st.integers(1, 24))
@example(ws=1, target=577, max_micro=24, max_gas=24)  # a prime above every product
@example(ws=7, target=3, max_micro=4, max_gas=4)      # target below the world size
@example(ws=4, target=2000, max_micro=3, max_gas=5)   # above the largest reachable
def test_solve_agrees_with_the_exhaustive_walk(ws, target, max_micro, max_gas):
    sol = solve(ws, target, max_micro, max_gas)
    pairs, lower, upper = _exhaustive(ws, target, max_micro, max_gas)
    assert (sol.pairs, sol.lower, sol.upper) == (pairs, lower, upper)
    for value in (sol.lower, sol.upper):
        if value is not None:
            assert solve(ws, value, max_micro, max_gas).exact


@settings(max_examples=50, deadline=None)
@given(ws=st.integers(1, 4096), target=st.integers(1, 10**30))
@example(ws=1, target=2_000_000)            # took ~30 s with the walk
@example(ws=1, target=1_048_577)            # just above 1024 × 1024
@example(ws=3, target=10**24 + 7)
def test_solve_stays_fast_on_huge_inputs(ws, target):
    # speed itself is measured in benchmarks/solve_speed.py; the work is bounded, so a
    # regression to walking would hang this test rather than pass
    sol = solve(ws, target)
    if sol.upper is not None:
        assert sol.upper >= target and solve(ws, sol.upper).exact
    if sol.lower is not None:
        assert sol.lower <= target and solve(ws, sol.lower).exact


def test_solve_2_000_000_on_one_rank_proposes_the_neighbours():
    sol = solve(1, 2_000_000)
    assert not sol.exact
    assert sol.lower == 1024 * 1024  # nothing bigger is reachable
    assert sol.upper is None


def test_the_cap_message_is_the_checkers():
    assert too_large("micro-batch", MAX_BATCH_VALUE) is None
    assert too_large("micro-batch", MAX_BATCH_VALUE + 1) == (
        "micro-batch is 16777217, implausibly large (over 16,777,216); "
        "check for an extra digit")
