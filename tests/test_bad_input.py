"""The bad-input corpus: each case gives one clear line, a non-zero exit status, no
traceback, and leaves the input file byte for byte as it was."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from _cli_helpers import NO_GPU, SEED_CONFIG, fake_gpus, run_cli, write_seed
from click.testing import CliRunner

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
    "non-json": (b"train_batch_size = 16\n", "invalid JSON at line 1:1", False),
    "json-array": (b"[16, 4, 8]\n", "top level is an array", False),
    "non-utf8": (b'{"train_batch_size": 16, "note": "caf\xe9"}', "not UTF-8", False),
    "directory": (DIRECTORY, "is a directory", False),
    "missing": (MISSING, "no such file", False),
    "negative": (batch(train_micro_batch_size_per_gpu=-4), "at least 1", False),
    "float": (batch(train_micro_batch_size_per_gpu=4.5), "whole number", False),
    "huge": (batch(train_micro_batch_size_per_gpu=10**30), "implausibly large", False),
    "auto": (batch(train_micro_batch_size_per_gpu="auto"), "Hugging Face Trainer", False),
    "string-number": (batch(gradient_accumulation_steps="8"), 'the string "8"', True),
    "unknown-key": (batch(train_batch_sizee=128), "did you mean 'train_batch_size'", False),
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
        first = stdout.splitlines()[0]
        assert first.startswith("❌ INVALID"), stdout
        assert needle in stdout


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
    fake_gpus(monkeypatch, NO_GPU)
    content, _, _ = CORPUS[name]
    path = make_input(tmp_path, content)
    before = snapshot(path)
    result = CliRunner().invoke(main, ["fix", str(path), "--num-gpus", "4"])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    if name == "unknown-key":  # the batch is fine; the typo remains and is reported
        assert "did you mean 'train_batch_size'" in result.output
    else:
        errors = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(errors) == 1 and errors[0].startswith("error: "), result.output
    assert snapshot(path) == before
    assert not (tmp_path / "ds_config.json.bak").exists()


def test_fix_repairs_numbers_written_as_strings(tmp_path, monkeypatch):
    fake_gpus(monkeypatch, NO_GPU)
    path = make_input(tmp_path, CORPUS["string-number"][0])
    result = CliRunner().invoke(main, ["fix", str(path), "--num-gpus", "4"])
    assert result.exit_code == 0, result.output
    assert json.loads(path.read_text())["gradient_accumulation_steps"] == 8


def unwritable_dir(tmp_path: Path) -> Path:
    if os.geteuid() == 0:
        return Path("/sys")  # root ignores permission bits; sysfs refuses new files
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    return locked


@pytest.mark.parametrize("command", ["fix", "auto", "generate"])
def test_unwritable_output_directory(command, tmp_path, monkeypatch):
    fake_gpus(monkeypatch, NO_GPU)
    seed = write_seed(tmp_path)
    before = seed.read_bytes()
    target = unwritable_dir(tmp_path)
    args = {
        "fix": ["fix", str(seed), "--num-gpus", "4", "--output", str(target / "out.json")],
        "auto": ["--auto", "--num-gpus", "4", "--output", str(target / "out.json")],
        "generate": ["generate", "--gpus", "4", "--out-dir", str(target)],
    }[command]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: cannot write"), result.output
    assert seed.read_bytes() == before
    assert json.loads(before) == SEED_CONFIG
    assert not (target / "out.json").exists()
