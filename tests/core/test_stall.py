"""Issue 22: the heartbeat format, the stall rule and the autopsy's summary (pure core)."""

from __future__ import annotations

import pytest

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.runs.stall import (
    BEAT_WIDTH,
    Beat,
    RankReport,
    Stall,
    StallPolicy,
    StallTracker,
    beat_bytes,
    default_policy,
    duration,
    heartbeat_path,
    main_thread_frames,
    parse_beat,
    parse_stall_after,
    read_beats,
    summarize_autopsy,
)

DUMP = """Process 41: python -u -m ds_wizard.train --local_rank=0
Python v3.11.7 (/usr/bin/python3.11)

Thread 41 (idle): "MainThread"
    all_reduce (torch/distributed/distributed_c10d.py:3252)
    DeepSpeedEngine.backward (deepspeed/runtime/engine.py:3431)
    Trainer._train_steps (ds_wizard/train/loop.py:325)
    main (ds_wizard/train/loop.py:60)
Thread 57 (idle): "Thread-1"
    wait (threading.py:327)
"""


def beat(rank: int, step: int, phase: str, t: float, host: str = "a") -> Beat:
    return Beat(rank, step, phase, t, 1000 + rank, rank, host)


def test_a_beat_round_trips_and_a_torn_one_is_refused(tmp_path) -> None:
    raw = beat_bytes(812, "backward", 1_700_000_000.25, 4242, 3, "node-b")
    assert len(raw) == BEAT_WIDTH
    got = parse_beat(3, raw)
    assert got == Beat(3, 812, "backward", 1_700_000_000.25, 4242, 3, "node-b")
    assert parse_beat(3, raw[:40]) is None  # a read that overlapped the write
    assert parse_beat(3, raw.replace(b"backward", b"sleeping")) is None
    heartbeat_path(tmp_path, 3).parent.mkdir()
    heartbeat_path(tmp_path, 3).write_bytes(raw)
    heartbeat_path(tmp_path, 4).write_bytes(b"garbage")
    (tmp_path / "heartbeat" / "notes.txt").write_text("x")
    assert read_beats(tmp_path) == {3: got}


@pytest.mark.parametrize(("text", "k", "floor"), [
    ("10x", 10, 60), ("90s", 10, 90), ("5m", 10, 300), ("3x,15s", 3, 15), ("2.5x, 1h", 2.5, 3600),
    ("45", 10, 45),
])
def test_stall_after_parses_k_and_floor_over_the_default(text: str, k: float,
                                                         floor: float) -> None:
    assert parse_stall_after(text, default_policy("cpu")) == StallPolicy(k, floor)


def test_stall_after_off_and_refusals() -> None:
    assert parse_stall_after("off", default_policy("cpu")) is None
    for bad in ("", "fast", "10y", "0.5x", "0s", "1x,2x,3x"):
        with pytest.raises(DsWizardError, match="--stall-after"):
            parse_stall_after(bad, default_policy("cuda"))


def test_defaults_suit_the_cpu_demo_and_gpus() -> None:
    cpu, gpu = default_policy("cpu"), default_policy("cuda")
    assert cpu.floor_s < gpu.floor_s <= 600  # NCCL's own timeout is 10 minutes
    assert gpu.threshold(20.0) == 300.0 and gpu.threshold(60.0) == 600.0
    assert gpu.threshold(60.0, in_checkpoint=True) == 1800.0
    assert parse_stall_after(cpu.arg(), gpu) == cpu


def test_tracker_stalls_after_the_window_names_the_laggard_and_resumes() -> None:
    t = StallTracker(StallPolicy(3, 10), expected_ranks=2)
    now = 1000.0
    beats = {0: beat(0, 1, "data", now), 1: beat(1, 1, "data", now)}
    assert t.feed({0: beats[0]}, now) is None  # one rank has not beaten yet: start-up
    for step in range(2, 6):  # steps of 2 s
        now += 2
        beats = {0: beat(0, step, "forward", now), 1: beat(1, step, "forward", now)}
        assert t.feed(beats, now) is None
    assert t.median_step_s() == pytest.approx(2.0)
    # rank 1 stops in forward at step 6; rank 0 reaches the collective in backward
    now += 2
    beats = {0: beat(0, 6, "backward", now), 1: beat(1, 6, "forward", now - 1)}
    assert t.feed(beats, now) is None
    assert t.feed(beats, now + 9) is None  # floor 10 s > 3 × 2 s
    assert t.feed(beats, now + 10.5) == "stalled"
    assert t.stalled is not None
    assert t.stalled.line(now + 240) == "stalled for 4m: rank 1 last in forward at step 6"
    assert t.feed(beats, now + 20) is None  # said once
    beats = {**beats, 1: beat(1, 6, "backward", now + 21)}
    assert t.feed(beats, now + 21) == "resumed" and t.stalled is None


def test_a_checkpoint_gets_more_time_and_nodes_are_named() -> None:
    t = StallTracker(StallPolicy(3, 10), expected_ranks=2)
    beats = {0: beat(0, 7, "checkpoint", 0.0, "a"), 1: beat(1, 7, "checkpoint", 0.0, "b")}
    t.feed(beats, 0.0)
    t.last_progress = 0.0
    assert t.feed(beats, 25.0) is None  # 10 s × 3 while checkpointing
    assert t.feed(beats, 31.0) == "stalled"
    assert "rank 0 (node a) last in checkpoint at step 7" in t.stalled.line(31.0)


def test_stall_record_round_trips_through_state_json() -> None:
    s = Stall(since=10.0, threshold_s=60.0, rank=3, host="b", phase="backward", step=812,
              single_host=False, autopsy="/r/stalls/x", odd_one_out="odd one out: rank 3")
    assert Stall.from_dict(s.to_dict()) == s
    assert Stall.from_dict({"nonsense": 1}) is None and Stall.from_dict("x") is None
    assert s.line(250.0).startswith("stalled for 4m: rank 3 (node b) last in backward at "
                                    "step 812; odd one out")


def test_duration_reads_like_a_person() -> None:
    assert [duration(s) for s in (5, 65, 240, 3700)] == ["5s", "1m 5s", "4m", "1h 1m"]


def test_py_spy_dump_main_thread_is_read_innermost_first() -> None:
    frames = main_thread_frames(DUMP)
    assert frames[0] == ("all_reduce", "torch/distributed/distributed_c10d.py", 3252)
    assert frames[-1][0] == "main" and len(frames) == 4


def test_the_stopped_rank_is_the_odd_one_out() -> None:
    reports = [RankReport(0, "a", 1000, "sleeping", DUMP),
               RankReport(1, "a", 1001, "stopped", None, "py-spy cannot read it")]
    s = summarize_autopsy(reports, beat(1, 6, "forward", 0.0))
    assert s.odd_rank == 1 and "stopped" in (s.odd_reason or "")
    wheres = dict((tuple(r), w) for w, r in s.groups)
    assert wheres[(0,)].startswith("all_reduce (torch/distributed/distributed_c10d.py:3252) ← "
                                   "Trainer._train_steps (ds_wizard/train/loop.py:325)")
    assert wheres[(1,)] == "process stopped"
    text = s.text("stalled for 30s: rank 1 last in forward at step 6")
    assert "odd one out: rank 1" in text and "1 rank(s) 0: all_reduce" in text


def test_the_one_rank_waiting_elsewhere_is_named_and_other_nodes_are_listed() -> None:
    elsewhere = DUMP.replace("all_reduce (torch/distributed/distributed_c10d.py:3252)",
                             "read (ds_wizard/core/runs/data.py:10)")
    reports = [RankReport(r, "a", 1000 + r, "sleeping", DUMP) for r in (0, 1, 3)]
    reports += [RankReport(2, "a", 1002, "running", elsewhere),
                RankReport(4, "b", 2000, None, error="on node b")]
    s = summarize_autopsy(reports, beat(0, 9, "backward", 0.0), world_size=8)
    assert s.odd_rank == 2 and "elsewhere" in (s.odd_reason or "")
    assert s.groups[0][1] == [0, 1, 3]
    assert s.not_examined == ["node b", "rank(s) 5, 6, 7 (no heartbeat visible on this node)"]
    assert ("not examined (py-spy reads only this node's processes): node b; rank(s) 5, 6, 7"
            in s.text("x"))
