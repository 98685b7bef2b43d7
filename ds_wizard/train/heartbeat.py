"""The rank's heartbeat: step, phase and time in RUN_DIR/heartbeat/rank-<N> (issue 22).

One ``os.pwrite`` of a fixed-width record at offset 0 per phase change: no open, no
rename, no fsync (the supervisor on this node reads the page cache; on a shared file
system the other nodes' beats arrive when the file system shows them). A few
microseconds against steps of tenths of seconds to minutes: docs/benchmarks.md.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

from ds_wizard.core.runs.stall import beat_bytes, heartbeat_path


class Heartbeat:
    def __init__(self, run_dir: Path, rank: int, local_rank: int) -> None:
        self.path = heartbeat_path(run_dir, rank)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._pid, self._local = os.getpid(), local_rank
        self._host = socket.gethostname().split(".")[0] or "localhost"
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC,
                                       0o644)

    def beat(self, step: int, phase: str) -> None:
        """Record that this rank entered ``phase`` of ``step``; never raises (a heartbeat
        that cannot be written must not stop training: the supervisor then sees a stall
        and its autopsy shows the rank busy)."""
        if self._fd is None:
            return
        data = beat_bytes(step, phase, time.time(), self._pid, self._local, self._host)
        try:
            os.pwrite(self._fd, data, 0)
        except OSError:
            self.close()

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


class NoHeartbeat:
    """For a rank without a run directory (never the case under ``ds-wizard launch``)."""

    def beat(self, step: int, phase: str) -> None:
        return None

    def close(self) -> None:
        return None
