"""Reading ``metrics.jsonl`` while the run is still writing it.

Rank 0 appends one JSON object per logged step and flushes. A reader may see the last
line half-written, so only complete lines (ending in ``\\n``) are consumed; the returned
offset points just past them, and the next call starts there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ds_wizard.core.runspec import parse_metrics


def read_new_metrics(path: str | Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Records appended since ``offset`` and the offset to pass next time.

    A missing file gives ``([], offset)``; lines that are not JSON objects are skipped.
    """
    try:
        with Path(path).open("rb") as fh:
            fh.seek(offset)
            chunk = fh.read()
    except FileNotFoundError:
        return [], offset
    end = chunk.rfind(b"\n") + 1
    records = []
    for raw in chunk[:end].splitlines():
        record = parse_metrics(raw)
        if record is not None:
            records.append(record)
    return records, offset + end


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Every complete record in the file."""
    return read_new_metrics(path, 0)[0]
