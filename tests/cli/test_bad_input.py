"""The bad-input corpus: each case gives one clear line, a non-zero exit status, no
traceback, and leaves the input file byte for byte as it was."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes import NO_GPU, patch_gpus, run_cli, write_seed

from ds_wizard.cli import main

DIRECTORY = object()
MISSING = object()


def batch(**values) -> bytes:
    cfg = {"train_batch_size": 128, "train_micro_batch_size_per_gpu": 4,
           "gradient_accumulation_steps": 8, "bf16": {"enabled": True}}
    cfg.update(values)
    return json.dumps(cfg, indent=2).encode()


# name → (file content, what the one line says, whether `fix` can repair it)
CORPUS = {
    "empty": (b"", "empty", False),
    "non-json": (b"train_batch_size = 16\n", "the top level is a string", False),
    "json-array": (b"[16, 4, 8]\n", "top level is an array", False),
    "non-utf8": (b'{"train_batch_size": 16, "note": "caf\xe9"}', "not UTF-8", False),
    "directory": (DIRECTORY, "is a directory", False),
    "missing": (MISSING, "no such file", False),
    "negative": (batch(train_micro_batch_size_per_gpu=-4), "at least 1", False),
    "float": (batch(train_micro_batch_size_per_gpu=4.5), "whole number", False),
    "huge": (batch(train_micro_batch_size_per_gpu=10**30), "implausibly large", False),
    "auto": (batch(train_micro_batch_size_per_gpu="auto"), "Hugging Face Trainer", False),
    "string-number": (batch(gradient_accumulation_steps="8"), 'the string "8"', True),
    "unknown-key": (batch(zero_optimization={"stage": 2, "overlapp_comm": True}),
                    "did you mean 'overlap_comm'", False),
}
LOAD_ERRORS = {"empty", "non-json", "json-array", "non-utf8", "directory", "missing"}


def make_input(tmp_path: Path, content) -> Path:
    path = tmp_path / "ds_config.json"
    if content is DIRECTORY:
        path.mkdir()
    elif content is not MISSING:
        path.write_bytes(content)
    return path


def snapshot(path: Path) -> bytes | str:
    return path.read_bytes() if path.is_file() else ("dir" if path.is_dir() else "missing")


def assert_one_line(name: str, needle: str, stdout: str, stderr: str) -> None:
    assert "Traceback" not in stdout + stderr
    if name in LOAD_ERRORS:
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), stderr
        assert needle in lines[0]
    else:
        # the headline alone must name the cause; the lines below it are detail
        first = stdout.splitlines()[0]
        assert first.startswith("❌ INVALID"), stdout
        assert needle in first, stdout


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_check(name, tmp_path):
    content, needle, _ = CORPUS[name]
    path = make_input(tmp_path, content)
    before = snapshot(path)
    proc = run_cli("check", str(path), "--num-gpus", "4", cwd=tmp_path)
    assert proc.returncode == 1
    assert_one_line(name, needle, proc.stdout, proc.stderr)
    assert snapshot(path) == before


@pytest.mark.parametrize("name", sorted(n for n, case in CORPUS.items() if not case[2]))
def test_fix_refuses(name, tmp_path, monkeypatch):
    patch_gpus(monkeypatch, NO_GPU)
    content, _, _ = CORPUS[name]
    path = make_input(tmp_path, content)
    before = snapshot(path)
    result = CliRunner().invoke(main, ["fix", str(path), "--num-gpus", "4"])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    if name == "unknown-key":  # the batch is fine; the typo remains and is reported
        assert "did you mean 'overlap_comm'" in result.output
    else:
        errors = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(errors) == 1 and errors[0].startswith("error: "), result.output
    assert snapshot(path) == before
    assert not (tmp_path / "ds_config.json.bak").exists()


def test_fix_repairs_numbers_written_as_strings(tmp_path, monkeypatch):
    patch_gpus(monkeypatch, NO_GPU)
    path = make_input(tmp_path, CORPUS["string-number"][0])
    result = CliRunner().invoke(main, ["fix", str(path), "--num-gpus", "4"])
    assert result.exit_code == 0, result.output
    assert json.loads(path.read_text())["gradient_accumulation_steps"] == 8


def refuse(*args, **kwargs):
    raise PermissionError(13, "Permission denied")


REAL_REPLACE = os.replace


def refuse_all_but_backup(src, dst, **kwargs):
    if str(dst).endswith(".bak"):
        return REAL_REPLACE(src, dst, **kwargs)
    return refuse()


# where the write is refused: no temp file can be made (a read-only directory), no rename
# at all, or only the final rename over the target (after fix has made its backup). Root
# ignores permission bits, so the refusal is injected where fsio makes the call.
FAILURE_POINTS = {
    "mkstemp": (tempfile, "mkstemp", refuse),
    "replace": (os, "replace", refuse),
    "replace-target": (os, "replace", refuse_all_but_backup),
}


@pytest.mark.parametrize("point", sorted(FAILURE_POINTS))
@pytest.mark.parametrize("command", ["fix", "auto", "generate"])
def test_refused_write_changes_nothing(command, point, tmp_path, monkeypatch):
    patch_gpus(monkeypatch, NO_GPU)
    work = tmp_path / "configs"
    work.mkdir()
    seed = write_seed(work)  # fix rewrites it in place; auto and generate write next to it
    before = seed.read_bytes()
    args = {
        "fix": ["fix", str(seed), "--num-gpus", "4"],
        "auto": ["--auto", "--num-gpus", "4", "--output", str(work / "out.json")],
        "generate": ["generate", "--gpus", "4", "--out-dir", str(work)],
    }[command]
    monkeypatch.setattr(*FAILURE_POINTS[point])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("error: cannot write"), result.stderr
    assert "Permission denied" in errors[0]
    assert seed.read_bytes() == before
    # no half-written target and no temp file; a backup only if it was made before the
    # final rename failed, and then it is the original
    left = sorted(p.name for p in work.iterdir())
    if command == "fix" and point == "replace-target":
        assert left == [seed.name, seed.name + ".bak"]
        assert (work / (seed.name + ".bak")).read_bytes() == before
    else:
        assert left == [seed.name]


def test_real_write_failure_through_the_entry_point(tmp_path):
    """A genuine OS refusal, whoever runs the tests: the config's name is legal (255 bytes)
    but its backup "NAME.bak" is over the 255-byte name limit."""
    seed = write_seed(tmp_path, "d" * 250 + ".json")
    before = seed.read_bytes()
    proc = run_cli("fix", str(seed), "--num-gpus", "4", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: cannot write"), proc.stderr
    assert "name too long" in errors[0].lower()
    assert seed.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [seed.name]
