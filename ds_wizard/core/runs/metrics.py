"""``metrics.jsonl``: written whole lines only, repaired on open, read without guessing.

Rank 0 writes one JSON object per logged step with :class:`MetricsWriter`: one ``write``
call per record on an ``O_APPEND`` descriptor (no user-space buffer to flush), always
ending in ``\\n``. A write that fails half-way (a full disk) is cut back, so the next
record never lands glued onto a torn one.

When training starts or resumes, :func:`repair_metrics` cuts the file back to the step the
run continues from: a torn last line (a kill mid-write, a full disk) and the records
logged after the checkpoint being resumed (they are trained again) are removed, so that no
step appears twice.

Readers tail the file with :func:`tail_metrics`: only complete lines are consumed, and a
line that is not one record is never passed over in silence: a record glued behind a torn
one is recovered, and what cannot be read is reported in ``problems``.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.base.fsio import read_from
from ds_wizard.core.runs.runspec import parse_metrics

#: bytes of metrics.jsonl read in one poll; the rest waits for the next poll
MAX_METRICS_CHUNK = 16 << 20


class MetricsWriteError(DsWizardError):
    """metrics.jsonl could not be written (a full disk, a lost mount)."""


@dataclass
class MetricsChunk:
    """What one read of the file found since ``offset``."""

    records: list[dict[str, Any]]
    offset: int  # pass this to the next read
    problems: list[str] = field(default_factory=list)


def split_line(raw: bytes) -> tuple[list[dict[str, Any]], str | None]:
    """The records in one complete line, and a description of what is not a record.

    A healthy line is one record. A line that does not parse may be a torn record with a
    whole one glued behind it (what an older writer left after a full disk): the whole one
    is recovered, the torn part described.
    """
    record = parse_metrics(raw)
    if record is not None:
        return [record], None
    text = raw.decode("utf-8", errors="replace").strip()
    if not text:
        return [], None
    decoder = json.JSONDecoder()
    start = text.find("{", 1)
    while start != -1:
        try:
            obj, end = decoder.raw_decode(text, start)
        except ValueError:
            obj, end = None, -1
        if isinstance(obj, dict) and not text[end:].strip():
            return [obj], f"a cut-off record ({_excerpt(text[:start])}) before it"
        start = text.find("{", start + 1)
    return [], f"a line that is not a metrics record ({_excerpt(text)})"


def _excerpt(text: str, limit: int = 40) -> str:
    shown = text if len(text) <= limit else text[:limit] + "…"
    return json.dumps(shown)


def tail_metrics(path: str | Path, offset: int = 0) -> MetricsChunk:
    """Records appended since ``offset``; a half-written last line is left for next time.

    A missing file gives no records and the same offset.
    """
    if not Path(path).exists():
        return MetricsChunk([], offset)
    chunk = read_from(path, offset, limit=MAX_METRICS_CHUNK, what="metrics.jsonl")
    end = chunk.rfind(b"\n") + 1
    records: list[dict[str, Any]] = []
    problems: list[str] = []
    pos = offset
    for raw in chunk[:end].split(b"\n")[:-1]:
        found, problem = split_line(raw)
        records += found
        if problem is not None:
            problems.append(f"{Path(path).name} at byte {pos}: {problem}")
        pos += len(raw) + 1
    return MetricsChunk(records, offset + end, problems)


def read_new_metrics(path: str | Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Records appended since ``offset`` and the offset to pass next time.

    Glued records are recovered; :func:`tail_metrics` also says what could not be read.
    """
    got = tail_metrics(path, offset)
    return got.records, got.offset


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Every complete record in the file."""
    return tail_metrics(path, 0).records


# -- writing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Repair:
    """What :func:`repair_metrics` removed."""

    torn_bytes: int = 0  # a last line without its newline
    dropped_steps: tuple[int, ...] = ()  # records after the step the run continues from
    cut_at: int | None = None  # the new size, when the file was cut

    def notes(self, name: str = "metrics.jsonl") -> list[str]:
        out = []
        if self.torn_bytes:
            out.append(f"{name}: removed a cut-off last line ({self.torn_bytes} bytes)")
        if self.dropped_steps:
            steps = self.dropped_steps
            span = (f"step {steps[0]}" if len(steps) == 1
                    else f"steps {min(steps)}–{max(steps)}")
            out.append(f"{name}: removed {span}, logged after the checkpoint this run "
                       "continues from (trained again)")
        return out


def repair_metrics(path: str | Path, keep_through_step: int) -> Repair:
    """Cut ``path`` back so it ends with whole records of steps ≤ ``keep_through_step``.

    The file is cut at the first line that is torn (no newline) or that holds a record of
    a later step; everything from there on is dropped. Lines before it stay byte for byte.
    """
    target = Path(path)
    try:
        # non-blocking: a FIFO planted in the run directory is refused, never waited on
        fd = os.open(target, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return Repair()
    except OSError as exc:
        raise DsWizardError(f"cannot repair {target}: {exc.strerror or exc}",
                            "check the run directory") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DsWizardError(f"{target} is not a regular file",
                            "remove it; ds-wizard reads only regular files")
    with os.fdopen(fd, "r+b") as fh:
        pos = 0
        cut: int | None = None
        torn = 0
        dropped: list[int] = []  # every record from the cut on
        for raw in fh:  # binary iteration: lines keep their b"\n"
            if not raw.endswith(b"\n"):
                torn = len(raw)
                cut = pos if cut is None else cut
                break
            found, _ = split_line(raw)
            steps = [r["step"] for r in found if isinstance(r.get("step"), int)]
            if cut is None and any(s > keep_through_step for s in steps):
                cut = pos
            if cut is not None:
                dropped += steps
            pos += len(raw)
        if cut is None:
            return Repair()
        try:
            fh.truncate(cut)
            fh.flush()
            os.fsync(fh.fileno())
        except OSError as exc:
            raise MetricsWriteError(f"cannot repair {target}: {exc.strerror or exc}",
                                    "check free space and permissions") from exc
    return Repair(torn, tuple(dropped), cut)


class MetricsWriter:
    """Appends whole records to ``metrics.jsonl``; opened after :func:`repair_metrics`."""

    def __init__(self, path: str | Path, keep_through_step: int) -> None:
        self.path = Path(path)
        self.repair = repair_metrics(self.path, keep_through_step)
        try:
            self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                                           0o666)
        except OSError as exc:
            raise MetricsWriteError(f"cannot open {self.path}: {exc.strerror or exc}",
                                    "check free space and permissions") from exc

    def write(self, line: str) -> None:
        """Append one record line (it must end with ``\\n``): all of it, or nothing."""
        if self._fd is None:
            raise ValueError("metrics writer is closed")
        if not line.endswith("\n") or "\n" in line[:-1]:
            raise ValueError("a metrics record is exactly one line ending in a newline")
        data = line.encode("utf-8")
        before = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                # a regular file takes it in one call unless the disk or a limit cuts it
                # short; the next call then reports why
                written = os.write(self._fd, view)
                if written == 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                view = view[written:]
        except OSError as exc:
            # cut the partial line back off, so the file still ends in whole records;
            # shrinking a file needs no free space
            try:
                os.ftruncate(self._fd, before)
            except OSError as again:
                note = f"; the torn line stays until the next start ({again.strerror})"
            else:
                note = ""
            raise MetricsWriteError(
                f"cannot write {self.path}: {exc.strerror or exc}{note}",
                "free disk space, then resume the run from its last checkpoint") from exc

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
