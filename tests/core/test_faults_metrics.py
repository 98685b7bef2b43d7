"""Issue 15, fault 7 (metrics.jsonl), fast: whole-line writes, repair on open, and readers
that never glue or silently skip a record. The real crash-and-resume is in
test_faults_runs.py."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ds_wizard.core.runs.metrics import (
    MetricsWriteError,
    MetricsWriter,
    read_metrics,
    read_new_metrics,
    repair_metrics,
    tail_metrics,
)
from ds_wizard.core.runs.runspec import MetricsRecord, metrics_line


def _line(step: int) -> str:
    return metrics_line(MetricsRecord(step=step, loss=1.0 / step, lr=1e-3, grad_norm=0.5,
                                      tokens_per_s=10.0, samples_per_s=1.0, elapsed_s=step,
                                      tokens=step * 64, epoch=0))


def _write(path: Path, steps: range, tail: str = "") -> bytes:
    data = "".join(_line(s) for s in steps) + tail
    path.write_text(data)
    return data.encode()


def test_repair_cuts_a_torn_tail_and_the_steps_after_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    _write(path, range(1, 26), tail='{"step": 26, "lo')
    kept = "".join(_line(s) for s in range(1, 21)).encode()
    repair = repair_metrics(path, keep_through_step=20)
    assert path.read_bytes() == kept  # the lines kept are byte-identical
    assert repair.dropped_steps == (21, 22, 23, 24, 25) and repair.torn_bytes == 16
    assert repair.notes() == [
        "metrics.jsonl: removed a cut-off last line (16 bytes)",
        "metrics.jsonl: removed steps 21–25, logged after the checkpoint this run continues "
        "from (trained again)",
    ]


def test_repair_of_a_healthy_file_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    data = _write(path, range(1, 11))
    stat = path.stat()
    assert repair_metrics(path, 10).notes() == []
    assert path.read_bytes() == data and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert repair_metrics(tmp_path / "missing.jsonl", 0).notes() == []


def test_a_fresh_start_empties_a_leftover_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    _write(path, range(1, 4))
    assert repair_metrics(path, 0).dropped_steps == (1, 2, 3)
    assert path.read_bytes() == b""


def test_writer_repairs_then_appends_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    _write(path, range(1, 8), tail='{"st')
    with MetricsWriter(path, keep_through_step=5) as writer:
        assert writer.repair.dropped_steps == (6, 7)
        for step in (6, 7, 8):
            writer.write(_line(step))
            # each record is on disk, whole, as soon as write returns
            assert path.read_bytes().endswith(_line(step).encode())
    assert [r["step"] for r in read_metrics(path)] == list(range(1, 9))
    with MetricsWriter(path, 8) as writer, pytest.raises(ValueError, match="one line"):
        writer.write('{"step": 9}')  # no newline: refused, nothing written
    assert [r["step"] for r in read_metrics(path)] == list(range(1, 9))


def test_a_failing_write_leaves_no_torn_line(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "metrics.jsonl"
    writer = MetricsWriter(path, 0)
    writer.write(_line(1))
    real_write = os.write

    def half_then_enospc(fd: int, data: bytes) -> int:
        real_write(fd, data[: len(data) // 2])  # the disk filled up half-way
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_enospc)
    with pytest.raises(MetricsWriteError, match="No space left on device"):
        writer.write(_line(2))
    monkeypatch.setattr(os, "write", real_write)
    assert path.read_text() == _line(1)  # cut back to whole records
    writer.write(_line(3))
    writer.close()
    assert [r["step"] for r in read_metrics(path)] == [1, 3]


def test_a_real_file_size_limit_is_a_one_line_error_and_no_torn_line(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes the kernel stop a write part-way, as a full disk does."""
    path = tmp_path / "metrics.jsonl"
    code = f"""
import resource, signal, sys
sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
from ds_wizard.core.runs.metrics import MetricsWriter, MetricsWriteError
from ds_wizard.core.runs.runspec import MetricsRecord, metrics_line
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (500, 500))
w = MetricsWriter({str(path)!r}, 0)
step = 0
try:
    while True:
        step += 1
        w.write(metrics_line(MetricsRecord(step, 1.0, 1e-3, 0.5, 10.0, 1.0, 1.0, 64, 0)))
except MetricsWriteError as exc:
    print(exc.one_line())
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"cannot write {path}: File too large")
    assert proc.stdout.count("\n") == 1
    data = path.read_bytes()
    assert data.endswith(b"\n") and len(data) <= 500
    assert all(json.loads(line) for line in data.splitlines())


# -- readers -------------------------------------------------------------------------------


def test_reader_recovers_a_record_glued_onto_a_torn_one_and_reports_the_torn_part(
    tmp_path: Path,
) -> None:
    path = tmp_path / "metrics.jsonl"
    # what the old writer left after a full disk: step 2 torn, step 3 glued onto it
    path.write_text(_line(1) + '{"step": 2, "loss": 0.' + _line(3) + "not json\n" + _line(4))
    got = tail_metrics(path, 0)
    assert [r["step"] for r in got.records] == [1, 3, 4]
    assert len(got.problems) == 2
    assert "a cut-off record" in got.problems[0] and '{\\"step\\": 2' in got.problems[0]
    assert got.problems[1].endswith('a line that is not a metrics record ("not json")')
    assert got.problems[0].startswith(f"metrics.jsonl at byte {len(_line(1))}:")
    assert read_new_metrics(path, 0) == (got.records, got.offset)


def test_reader_leaves_a_half_written_last_line_for_the_next_read(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    full = _line(2)
    path.write_text(_line(1) + full[:10])
    first = tail_metrics(path, 0)
    assert [r["step"] for r in first.records] == [1] and first.problems == []
    with path.open("a") as fh:
        fh.write(full[10:])
    second = tail_metrics(path, first.offset)
    assert [r["step"] for r in second.records] == [2] and second.problems == []
    assert second.offset == path.stat().st_size


# -- property: whatever a crash leaves, repair + reader agree ---------------------------------

@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(last=st.integers(0, 30), keep=st.integers(0, 35), cut=st.integers(0, 400),
       garbage=st.binary(max_size=40).filter(lambda b: b"\n" not in b))
def test_repair_then_append_never_repeats_or_loses_a_step(tmp_path: Path, last: int, keep: int,
                                                          cut: int, garbage: bytes) -> None:
    path = tmp_path / "metrics.jsonl"
    whole = "".join(_line(s) for s in range(1, last + 1)).encode()
    torn = _line(last + 1).encode()[: cut % len(_line(last + 1))] + garbage
    path.write_bytes(whole + torn)
    resumed = min(keep, last)  # a run resumes from a checkpoint it has logged
    with MetricsWriter(path, resumed) as writer:
        for step in range(resumed + 1, resumed + 4):
            writer.write(_line(step))
    got = tail_metrics(path, 0)
    assert [r["step"] for r in got.records] == list(range(1, resumed + 4))
    assert got.problems == []
    assert path.read_bytes().startswith("".join(_line(s) for s in range(1, resumed + 1))
                                        .encode())
