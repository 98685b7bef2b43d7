"""ds-wizard's own scalars into the run's trackers, through DeepSpeed's monitor (issue 22).

The engine builds ``engine.monitor`` (DeepSpeed's ``MonitorMaster``) from the config's
``tensorboard`` / ``csv_monitor`` / ``wandb`` blocks; on rank 0 its ``write_events`` feeds
every enabled tracker. ds-wizard adds nothing but events: no second logger.

The x axis is DeepSpeed's own: samples seen (``engine.global_samples``), as for its
``Train/Samples/lr``. DeepSpeed 0.19 no longer writes ``Train/Samples/train_loss`` from the
plain engine (only the pipeline engine does), so the loss goes in under that same tag.
"""

from __future__ import annotations

import resource
import sys
from typing import Any

from ds_wizard.core.runs.runspec import MetricsRecord

PREFIX = "ds_wizard"
LOSS_TAG = "Train/Samples/train_loss"  # DeepSpeed's tag (runtime/pipe/engine.py)


def _peak_rss_gib() -> float:
    """This process's peak resident memory (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**30 if sys.platform == "darwin" else 2**20), 3)


class Tracking:
    """Rank 0's events; every method does nothing when no tracker is enabled."""

    def __init__(self, engine: Any, rank: int) -> None:
        monitor = getattr(engine, "monitor", None)
        self.engine = engine
        self.monitor = monitor if rank == 0 and getattr(monitor, "enabled", False) else None

    @property
    def enabled(self) -> bool:
        return self.monitor is not None

    def _x(self) -> int:
        return int(getattr(self.engine, "global_samples", 0))

    def start(self, *, world: int, micro: int, gas: int, global_batch: int, seq_len: int,
              zero: dict[str, Any]) -> None:
        """The batch triple and the ZeRO settings, at step 0 (DeepSpeed#7494)."""
        if self.monitor is None:
            return
        offload_opt = (zero.get("offload_optimizer") or {}).get("device", "none")
        offload_par = (zero.get("offload_param") or {}).get("device", "none")
        values = {
            "train_batch_size": global_batch, "train_micro_batch_size_per_gpu": micro,
            "gradient_accumulation_steps": gas, "world_size": world, "seq_len": seq_len,
            "zero_stage": int(zero.get("stage", 0)),
            "offload_optimizer": float(offload_opt not in (None, "none")),
            "offload_param": float(offload_par not in (None, "none")),
            "overlap_comm": float(bool(zero.get("overlap_comm", False))),
        }
        self.monitor.write_events([(f"{PREFIX}/config/{k}", float(v), 0)
                                   for k, v in values.items()])

    def record(self, rec: MetricsRecord) -> None:
        """One logged step: loss, tokens/s, samples/s, MFU and peak memory where known."""
        if self.monitor is None:
            return
        x = self._x()
        events: list[tuple[str, float, int]] = [
            (LOSS_TAG, float(rec.loss), x),
            (f"{PREFIX}/tokens_per_s", float(rec.tokens_per_s), x),
            (f"{PREFIX}/samples_per_s", float(rec.samples_per_s), x),
            (f"{PREFIX}/step", float(rec.step), x),
        ]
        if rec.grad_norm is not None:
            events.append((f"{PREFIX}/grad_norm", float(rec.grad_norm), x))
        if rec.mfu is not None:
            events.append((f"{PREFIX}/mfu", float(rec.mfu), x))
        if rec.max_mem_alloc_gib is not None:
            events.append((f"{PREFIX}/peak_memory_gib", float(rec.max_mem_alloc_gib), x))
        else:  # CPU ranks: the process's peak resident memory
            events.append((f"{PREFIX}/peak_rss_gib", _peak_rss_gib(), x))
        self.monitor.write_events(events)

    def close(self) -> None:
        """Flush and close TensorBoard's writer: the last events reach the disk."""
        tb = getattr(self.monitor, "tb_monitor", None)
        writer = getattr(tb, "summary_writer", None)
        if writer is not None:
            writer.close()
