"""Issue 23: a CLI fuzz over every file-reading command finds no traceback and no escape
byte in the output.

Inputs are mutated from realistic seeds: the DeepSpeed configs of tests/data/ds_corpus
(as JSON and as hjson with comments), hostfiles, presets (exported TOML) and training logs.
The mutations insert terminal escapes (CSI, OSC 52, their 8-bit C1 forms), bidi overrides,
line breaks, NUL, long digit runs, deep brackets and odd number spellings; cut, repeat or
swap spans. Each case runs in-process through click's CliRunner (milliseconds), with a
fixed seed: 2,000 cases in the fast lane, 20,000 in the slow one.

What is asserted for every case: no exception but SystemExit; no control character (C0
other than tab/newline, C1, DEL) or bidi control in stdout or stderr; a failing command's
stderr ends in one ``error:`` line (or it explains itself on stdout, as ``check`` and
``presets validate`` do), and never a traceback.
"""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes import NO_GPU, patch_gpus

from ds_wizard.cli import main

CORPUS = Path(__file__).resolve().parents[1] / "data" / "ds_corpus"
BAD_OUTPUT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e"
                        r"\u2066-\u2069]")
INSERTS = ["\x1b[31m", "\x1b]52;c;cHduZWQ=\x07", "\x1b]0;title\x1b\\", "\x9b2J", "\x9d0;t\x9c",
           "\u202e", "\u2066", "\x00", "\r", "\n", "\t", "\x7f", "\x85", "\u2028", "9" * 60,
           "0x10", "1_000", "1e999", "NaN", "-1", "[" * 80, "{" * 80, "}", "]", '"', "'",
           "//", "/*", "#", "=", ",", ":", "slots=", " slots=99999999999999999999",
           "world_size 16 != 4 * 2 * 2", "world_size 8 != 1 * 1 * 1", "$(touch x)", "`id`",
           "é", "\ufeff", "\udcff"]
LOG = """[2026-01-01 00:00:00,000] [INFO] [launch.py:256:main] dist_world_size=4
[rank0]: Traceback (most recent call last):
[rank0]: AssertionError: Check batch related parameters. train_batch_size is not equal to \
micro_batch_per_gpu * gradient_acc_step * world_size 32 != 4 * 2 * 2
CUDA_VISIBLE_DEVICES=0,1 deepspeed train.py --deepspeed ds_config.json
"""
HOSTS = "# cluster\nworker-1 slots=4\nworker-2 slots=4\n"


def seeds() -> dict[str, list[str]]:
    configs = [f.read_text(encoding="utf-8") for f in sorted(CORPUS.glob("*.json"))]
    preset = CliRunner().invoke(main, ["presets", "export", "tiny_mamba"]).stdout
    return {"config": configs, "preset": [preset], "hostfile": [HOSTS], "log": [LOG]}


def mutate(text: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 4)):
        at = rng.randint(0, len(text))
        choice = rng.random()
        if choice < 0.6:
            text = text[:at] + rng.choice(INSERTS) + text[at:]
        elif choice < 0.75:
            text = text[:at] + text[at + rng.randint(1, 40):]
        elif choice < 0.85:
            span = text[at:at + rng.randint(1, 60)]
            text = text[:at] + span * rng.randint(2, 5) + text[at:]
        else:
            other = rng.randint(0, len(text))
            text = text[:min(at, other)] + text[max(at, other):] + text[min(at, other):max(
                at, other)]
    return text


def commands(kind: str, path: Path, cfg: Path, out: Path) -> list[list[str]]:
    p = str(path)
    if kind == "config":
        return [["check", p, "--num-gpus", "4"], ["check", p, "--num-gpus", "2", "--json"],
                ["fix", p, "--num-gpus", "4", "--dry-run"],
                ["check", p, "--num-gpus", "2", "--hf", "per_device_train_batch_size=2"],
                ["explain", "world_size 16 != 1 * 1 * 1", "--config", p]]
    if kind == "preset":
        return [["presets", "validate", p], ["presets", "show", p],
                ["plan", "--preset", p, "--num-gpus", "2", "--gpu-memory", "80GiB"],
                ["presets", "list", "--json"]]
    if kind == "hostfile":
        return [["plan", "--preset", "tiny_mamba", "--hostfile", p, "--gpu-memory", "80GiB"],
                ["check", str(cfg), "--hostfile", p],
                ["--auto", "--preset", "tiny_mamba", "--hostfile", p, "--dry-run"],
                ["launch", "--preset", "tiny_mamba", "--hostfile", p, "--dry-run"]]
    return [["explain", p], ["explain", p, "--json"]]


def problem(result, args: list[str]) -> str | None:
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return f"raised {type(result.exception).__name__}: {result.exception}"
    shown = result.stdout + result.stderr
    bad = BAD_OUTPUT.search(shown)
    if bad:
        return f"control character {bad.group()!r} in the output"
    if "Traceback" in result.stderr:
        return "a traceback"
    if result.exit_code not in (0, None):
        errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
        if len(errors) > 1:
            return f"{len(errors)} error lines"
        if not errors and not result.stdout.strip():
            return f"exit {result.exit_code} without saying why"
    return None


def fuzz(count: int, seed: int, tmp: Path) -> tuple[list[str], int]:
    rng = random.Random(seed)
    pool = seeds()
    kinds = sorted(pool)
    cfg = tmp / "good.json"
    cfg.write_text('{"train_batch_size": 32, "train_micro_batch_size_per_gpu": 4}')
    out = tmp / "out"
    out.mkdir(exist_ok=True)
    runner = CliRunner(env={"DS_WIZARD_PRESET_PATH": str(tmp / "presets")})
    (tmp / "presets").mkdir(exist_ok=True)
    failures: list[str] = []
    ran = 0
    while ran < count:
        kind = rng.choice(kinds)
        text = mutate(rng.choice(pool[kind]), rng)
        suffix = {"config": ".json", "preset": ".toml", "hostfile": "", "log": ".log"}[kind]
        path = tmp / f"case{suffix}"
        path.write_bytes(text.encode("utf-8", "surrogateescape") if rng.random() < 0.9
                         else text.encode("utf-8", "surrogateescape")[::-1])
        if kind == "preset":  # also under a hostile file name, found through the search path
            (tmp / "presets" / f"p{rng.choice(INSERTS[:6])}.toml").write_text(
                text, encoding="utf-8", errors="surrogateescape")
        for args in commands(kind, path, cfg, out):
            if ran >= count:
                break
            result = runner.invoke(main, args)
            ran += 1
            why = problem(result, args)
            if why:
                failures.append(f"{' '.join(args)} on {text[:200]!r}: {why}")
        for old in (tmp / "presets").glob("*.toml"):
            old.unlink()
    return failures, ran


@pytest.fixture(autouse=True)
def _no_gpu(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    patch_gpus(monkeypatch, NO_GPU)


def test_cli_fuzz_2000_cases_no_traceback_no_escape(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    start = time.perf_counter()
    failures, ran = fuzz(2000, seed=23, tmp=tmp_path)
    with capsys.disabled():
        print(f"\nCLI fuzz: {ran} cases in {time.perf_counter() - start:.1f} s")
    assert ran == 2000
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:15])


@pytest.mark.slow
def test_cli_fuzz_20000_cases(tmp_path: Path) -> None:
    failures, _ran = fuzz(20_000, seed=2023, tmp=tmp_path)
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:15])
