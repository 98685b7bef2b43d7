"""`ds-wizard tune`'s pure part: candidates, the search order, the choice, OOM lines."""

from __future__ import annotations

import pytest

from ds_wizard.core.plan import tune
from ds_wizard.core.plan.memory import GiB, Strategy

Z2 = Strategy(2)


def fake(limit_micro: int, speed: dict[int, float] | None = None,
         oom_above: int | None = None):
    """A stand-in measurement: memory grows with the micro-batch; above ``oom_above`` the
    run runs out of memory; above ``limit_micro`` it runs but peaks over the limit."""
    calls: list[int] = []

    def measure(c: tune.Candidate) -> tune.Measurement:
        calls.append(c.micro_batch)
        peak = (1 + c.micro_batch) * GiB // 4
        if oom_above is not None and c.micro_batch > oom_above:
            return tune.Measurement(c, tune.OOM, peak, note="out of memory")
        status = tune.verdict(True, False, peak, (1 + limit_micro) * GiB // 4)
        tps = (speed or {}).get(c.micro_batch, 100.0 * c.micro_batch)
        return tune.Measurement(c, status, peak, peak, (peak, peak), tps, 3)
    return measure, calls


def test_candidates_keep_the_global_batch() -> None:
    cands = tune.candidates(16, 2, [Z2])
    assert [c.micro_batch for c in cands] == [1, 2, 4, 8]
    assert {c.global_batch for c in cands} == {16}
    assert [c.grad_accum for c in cands] == [8, 4, 2, 1]


def test_a_global_batch_the_ranks_cannot_share_is_refused() -> None:
    with pytest.raises(tune.TuneError, match="cannot be split over 3"):
        tune.micro_batches(16, 3)


def test_search_from_the_plan_goes_up_then_one_below() -> None:
    measure, calls = fake(limit_micro=8)
    found = tune.search(tune.candidates(16, 2, [Z2]), 4, measure)
    assert calls == [4, 8, 2]  # start, bisect up, one below the start
    assert tune.choose(found).candidate.micro_batch == 8


def test_an_out_of_memory_candidate_does_not_fit_and_the_choice_is_below_it() -> None:
    measure, calls = fake(limit_micro=64, oom_above=4)
    found = tune.search(tune.candidates(64, 2, [Z2]), 4, measure)
    by_micro = {m.candidate.micro_batch: m for m in found}
    assert by_micro[8].status == tune.OOM and not by_micro[8].fits
    assert calls == [4, 16, 8, 2]  # bisection: nothing above a known OOM is tried
    chosen = tune.choose(found)
    assert chosen is not None and chosen.candidate.micro_batch == 4
    assert 3 <= len(found) <= 5


def test_when_the_start_does_not_fit_the_search_goes_down() -> None:
    measure, calls = fake(limit_micro=1)
    found = tune.search(tune.candidates(32, 2, [Z2]), 8, measure)
    assert calls[0] == 8 and tune.choose(found).candidate.micro_batch == 1
    assert all(m.candidate.micro_batch <= 8 for m in found)


def test_a_faster_smaller_micro_batch_is_followed_down() -> None:
    speed = {1: 900.0, 2: 800.0, 4: 300.0, 8: 200.0}
    measure, calls = fake(limit_micro=8, speed=speed)
    found = tune.search(tune.candidates(16, 2, [Z2]), 4, measure)
    assert calls == [4, 8, 2, 1]
    assert tune.choose(found).candidate.micro_batch == 1


def test_a_slower_smaller_one_ends_the_search() -> None:
    measure, calls = fake(limit_micro=8, speed={1: 50.0, 2: 100.0, 4: 400.0, 8: 800.0})
    tune.search(tune.candidates(16, 2, [Z2]), 4, measure)
    assert calls == [4, 8, 2]


def test_max_candidates_bounds_the_search_and_stages_are_searched_in_turn() -> None:
    measure, _ = fake(limit_micro=64)
    found = tune.search(tune.candidates(64, 2, [Z2, Strategy(3)]), 4, measure,
                        max_candidates=4)
    assert len(found) == 4
    assert {m.candidate.strategy for m in found} <= {Z2, Strategy(3)}


def test_a_stop_ends_the_search_and_keeps_what_was_measured() -> None:
    measure, _ = fake(limit_micro=8)

    def stopping(c: tune.Candidate) -> tune.Measurement:
        if c.micro_batch == 8:
            return tune.Measurement(c, tune.STOPPED, GiB, note="stopped by Ctrl-C")
        return measure(c)
    found = tune.search(tune.candidates(16, 2, [Z2]), 4, stopping)
    assert [m.candidate.micro_batch for m in found] == [4, 8]
    assert tune.choose(found).candidate.micro_batch == 4


def test_over_the_limit_is_not_chosen_even_when_fastest() -> None:
    measure, _ = fake(limit_micro=4, speed={8: 10_000.0})
    found = tune.search(tune.candidates(16, 2, [Z2]), 4, measure)
    over = [m for m in found if m.candidate.micro_batch == 8]
    assert over and over[0].status == tune.OVER
    assert tune.choose(found).candidate.micro_batch != 8


@pytest.mark.parametrize("line", [
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
    "RuntimeError: [enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't "
    "allocate memory: you tried to allocate 1073741824 bytes. Error code 12 (Cannot "
    "allocate memory)",
    "MemoryError",
    "[2026-12-08 01:05:04,604] [INFO] [launch.py:315:sigkill_handler] ... exits with "
    "return code = -9",
])
def test_out_of_memory_lines_are_recognised(line: str) -> None:
    assert tune.out_of_memory(["step 1/4", line]) is not None


def test_an_ordinary_failure_is_not_out_of_memory() -> None:
    assert tune.out_of_memory(["ValueError: bad data", "exits with return code = 1"]) is None


def test_result_table_shows_prediction_next_to_measurement() -> None:
    measure, _ = fake(limit_micro=8)
    found = tune.search(tune.candidates(16, 2, [Z2]), 4, measure)
    chosen = tune.choose(found)
    result = tune.TuneResult("tiny_mamba", 2, 16, "cpu", "cpu", None, "", 0.9, 4,
                             tuple(found), chosen)
    rows = tune.table_rows(result)
    assert len(rows) == 3 and rows[0]["error"] == "+0.0%"
    assert sum("chosen" in r["verdict"] for r in rows) == 1
    data = result.to_dict()
    assert data["chosen"]["micro_batch"] == 8
    back = tune.measurement_from_dict(data["candidates"][0])
    assert back.candidate == found[0].candidate and back.tokens_per_s == found[0].tokens_per_s
