"""Each rank's peak memory, gathered onto every rank for rank 0's metrics record.

On GPUs the accelerator's own counters (``get_accelerator().max_memory_allocated()`` and
``max_memory_reserved()``, reset after the first step so the figures are the steady
training peak); on CPU ranks the process's peak resident set (``ru_maxrss``), which counts
everything the rank ever held, start-up included: that is what the host's RAM must hold.
"""

from __future__ import annotations

import resource
import sys
from typing import Any


def peak_rss_bytes() -> int:
    """This process's peak resident set size (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def own_peaks(accelerator: Any, cuda: bool) -> tuple[int, int, int]:
    """(allocated, reserved, RSS) peaks of this rank in bytes; 0 where not measured."""
    alloc = int(accelerator.max_memory_allocated()) if cuda else 0
    reserved = int(accelerator.max_memory_reserved()) if cuda else 0
    return alloc, reserved, peak_rss_bytes()


def gather_peaks(tdist: Any, torch: Any, device: Any, peaks: tuple[int, int, int],
                 world: int) -> list[tuple[int, int, int]]:
    """Every rank's :func:`own_peaks`, in rank order (a collective: all ranks call it)."""
    mine = torch.tensor([float(p) for p in peaks], dtype=torch.float64, device=device)
    parts = [torch.zeros_like(mine) for _ in range(world)]
    tdist.all_gather(parts, mine)
    return [tuple(int(v) for v in part.tolist()) for part in parts]  # type: ignore[misc]
