"""Every benchmark's ``--quick`` mode runs and prints its usual shape, so a change to the
APIs a benchmark uses breaks the slow lane rather than the next person who measures.

Figures are never compared with anything: a quick run is too small to mean anything, and a
measurement depends on the machine. Only exit statuses and the output's shape (rows,
columns, the tolerance column) are checked. ``gpu_check.py --self-test`` has its own test
(tests/test_gpu_check.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"

pytestmark = pytest.mark.slow

NUMBER = r"[\d,]+(?:\.\d+)?"


def quick(script: str, *args: str, timeout: float = 300) -> str:
    """Run ``benchmarks/SCRIPT --quick ARGS`` in a fresh interpreter; its stdout."""
    # this checkout's ds_wizard, also in the DeepSpeed ranks a benchmark starts; CPU ranks
    # even on a GPU machine, so the shape is the same everywhere
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(BENCH / script), "--quick", *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    assert done.returncode == 0, f"{script} --quick exited {done.returncode}:\n" \
                                 f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def table_rows(text: str) -> list[list[str]]:
    """The cells of each Markdown table line (the separator line included)."""
    return [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")]


def test_activation_table_quick(tmp_path: Path) -> None:
    out = tmp_path / "table.md"
    text = quick("activation_table.py", "--out", str(out))
    assert out.read_text(encoding="utf-8") == text  # --out writes what it prints
    rows = table_rows(text)
    header, body = rows[0], rows[2:]
    assert len(header) == 12 and header[-3:] == ["measured (KiB)", "estimate (KiB)", "error"]
    assert len(body) == 4  # QUICK_GRID
    assert {r[0] for r in body} == {"mamba1", "mamba2"}
    assert {r[1] for r in body} == {"loop", "mambapy", "chunked"}
    for row in body:
        assert len(row) == len(header)
        # the tolerance column: the estimate is within ±15% on any CPU
        error = re.fullmatch(r"([+-]\d+\.\d)%", row[-1])
        assert error and abs(float(error.group(1))) <= 15, row


def test_checkpoint_hash_quick() -> None:
    text = quick("checkpoint_hash.py").strip()
    assert re.fullmatch(
        rf"0\.01 GB in 2 files: marker \(hash all\) {NUMBER} s, verify {NUMBER} s = "
        rf"{NUMBER} MB/s per process \(target ≥ 500 MB/s: not judged, --quick\)", text), text


def test_gpu_memory_check_quick() -> None:
    lines = quick("gpu_memory_check.py").splitlines()
    if lines[0].startswith("gpu_memory_check: not run: "):  # no GPU or no mamba-ssm here
        assert re.fullmatch(rf"mamba2_130m micro 1: estimate {NUMBER} GiB \(not measured\)",
                            lines[1]), lines
        return
    rows = table_rows("\n".join(lines))
    assert rows[0][-3:] == ["max_memory_allocated", "estimate", "error"] and len(rows) == 3


def test_solve_speed_quick() -> None:
    lines = quick("solve_speed.py").splitlines()
    assert len(lines) == 6
    for line in lines:
        assert re.fullmatch(rf"solve\(\d+, \d+\): {NUMBER} ms", line), line


def test_startup_quick() -> None:
    text = quick("startup.py")
    rows = [[c.strip() for c in line.split("|")] for line in text.splitlines()
            if line.count("|") == 5]
    header, body = rows[0], rows[2:]
    assert header[1:] == ["runs", "median s", "min s", "max s", "median CPU s"]
    labels = [r[0] for r in body]
    assert len(body) == 5 and labels[-1] == "python -c pass (interpreter floor)"
    assert not any("import deepspeed" in label for label in labels)  # skipped by --quick
    for row in body:
        assert row[1] == "1" and all(re.fullmatch(r"\d+\.\d{3}", c) for c in row[2:]), row
    assert re.search(r"^--auto median \d+\.\d{3} s", text, re.M)
    assert "speed-up over import deepspeed: not measured" in text


def test_train_throughput_quick_runs_both_loops() -> None:
    """ds-wizard's launch API and ds_wizard.train (A) against the bare DeepSpeed loop (B),
    each under the real launcher: one round, one rank, a shrunken model."""
    text = quick("train_throughput.py", timeout=600)
    assert re.search(r"^preset tiny_mamba with .*, 1 rank\(s\) \(cpu\), 2 steps per run",
                     text, re.M), text
    rows = table_rows(text)
    assert rows[0] == ["round", "A tok/s (window)", "B tok/s (window)", "ratio",
                       "A median step", "B median step", "ratio"]
    assert [r[0] for r in rows[2:]] == ["1", "median"]
    for row in rows[2:]:
        assert all(re.fullmatch(NUMBER, c) and float(c.replace(",", "")) > 0
                   for c in row[1:]), row
