"""Issue 22, inside the rank: ds-wizard's scalars go through the engine's own monitor, and
the heartbeat is one fixed-width record the supervisor reads."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

from ds_wizard.core.runs.runspec import MetricsRecord
from ds_wizard.core.runs.stall import read_beats
from ds_wizard.train.heartbeat import Heartbeat
from ds_wizard.train.tracking import LOSS_TAG, Tracking


class RecordingMonitor:
    """DeepSpeed's MonitorMaster interface as the engine exposes it (enabled, write_events)."""

    enabled = True

    def __init__(self) -> None:
        self.events: list[tuple[str, float, int]] = []

    def write_events(self, events: list[tuple[str, float, int]]) -> None:
        self.events += events


def record(step: int, **kw: object) -> MetricsRecord:
    return MetricsRecord(step=step, loss=2.5, lr=1e-3, grad_norm=0.5, tokens_per_s=1000.0,
                         samples_per_s=4.0, elapsed_s=1.0, tokens=64 * step, epoch=0,
                         **kw)  # type: ignore[arg-type]


def test_rank_0_writes_the_batch_triple_then_each_logged_step() -> None:
    monitor = RecordingMonitor()
    engine = SimpleNamespace(monitor=monitor, global_samples=0)
    t = Tracking(engine, rank=0)
    t.start(world=2, micro=4, gas=2, global_batch=16, seq_len=64,
            zero={"stage": 2, "offload_optimizer": {"device": "cpu"}})
    at0 = {tag: (v, x) for tag, v, x in monitor.events}
    assert at0["ds_wizard/config/train_batch_size"] == (16.0, 0)
    assert at0["ds_wizard/config/zero_stage"] == (2.0, 0)
    assert at0["ds_wizard/config/offload_optimizer"] == (1.0, 0)
    monitor.events.clear()
    engine.global_samples = 32
    t.record(record(2, mfu=0.41, max_mem_alloc_gib=12.5))
    got = {tag: (v, x) for tag, v, x in monitor.events}
    assert got[LOSS_TAG] == (2.5, 32) and LOSS_TAG == "Train/Samples/train_loss"
    assert got["ds_wizard/tokens_per_s"] == (1000.0, 32)
    assert got["ds_wizard/mfu"] == (0.41, 32)
    assert got["ds_wizard/peak_memory_gib"] == (12.5, 32)
    monitor.events.clear()
    t.record(record(3))  # a CPU rank: no MFU, its peak resident memory instead
    tags = {tag for tag, _, _ in monitor.events}
    assert "ds_wizard/mfu" not in tags and "ds_wizard/peak_rss_gib" in tags


def test_other_ranks_and_runs_without_trackers_write_nothing() -> None:
    monitor = RecordingMonitor()
    Tracking(SimpleNamespace(monitor=monitor), rank=1).record(record(1))
    off = SimpleNamespace(monitor=SimpleNamespace(enabled=False), global_samples=0)
    Tracking(off, rank=0).record(record(1))
    assert monitor.events == []


def test_heartbeat_is_one_record_overwritten_in_place(tmp_path: Path) -> None:
    hb = Heartbeat(tmp_path, rank=1, local_rank=1)
    hb.beat(3, "forward")
    hb.beat(3, "backward")
    beats = read_beats(tmp_path)
    assert beats[1].step == 3 and beats[1].phase == "backward" and beats[1].pid == os.getpid()
    assert (tmp_path / "heartbeat" / "rank-1").stat().st_size == 160
    hb.close()
    hb.beat(4, "data")  # closed: a no-op, never an exception in the training loop
    assert read_beats(tmp_path)[1].step == 3
