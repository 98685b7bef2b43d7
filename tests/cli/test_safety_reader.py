"""Issue 23, "one reader": every option or argument of the click tree that names a file is
fed a FIFO, ``/dev/zero``, a symlink loop and an oversized file. None may hang, trace back
or read without a cap: each ends in time with one ``error:`` line (an output option may
also succeed over an existing big file). A throwaway command whose option bypasses the
reader is shown to fail the same check.

The options are found by walking the command tree (tests/_cli_tree.py), so a command added
later is covered without being listed here. Each case runs in a forked child with a time
and memory limit, so a hang or an uncapped read fails the test instead of the machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
import pytest
from _cli_tree import OUTPUT_LIKE, Outcome, argv, file_params, run_isolated
from click.testing import CliRunner
from fakes import NO_GPU, patch_gpus

from ds_wizard.cli import main

CONFIG = {"train_batch_size": 8, "train_micro_batch_size_per_gpu": 2,
          "gradient_accumulation_steps": 2}
TINY = ["--preset", "tiny_mamba"]

# What each known command needs besides the file under test to reach its reads (a command
# not listed gets only its file; it must still end in one line). Keys: command paths.
VALUES: dict[tuple[str, ...], dict[str, str]] = {
    (): {"preset_ref": "tiny_mamba"},
    ("check",): {"config": "{cfg}"},
    ("fix",): {"config": "{cfg}"},
    ("explain",): {"source": "world_size 16 != 1 * 1 * 1"},
    ("generate",): {"preset_ref": "tiny_mamba", "out_dir": "{out}"},
    ("plan",): {"preset_ref": "tiny_mamba"},
    ("launch",): {"preset_ref": "tiny_mamba"},
    ("presets", "show"): {"name": "tiny_mamba"},
    ("presets", "export"): {"name": "tiny_mamba"},
}
EXTRA: dict[tuple[str, ...], list[str]] = {
    (): ["--auto", "--num-gpus", "2", "--dry-run"],
    ("check",): ["--num-gpus", "2"],
    ("fix",): ["--num-gpus", "2", "--dry-run"],
    ("generate",): ["--gpus", "2"],
    ("plan",): ["--num-gpus", "2"],
    ("launch",): ["--num-gpus", "2", "--dry-run"],
    ("tune",): ["--num-gpus", "2", "--dry-run"],  # the plan only: no candidate runs
}
# options whose value is a name or a choice as well as a path: a hostile path there is
# refused as a bad name, which is one error line too
KINDS = ("fifo", "dev_zero", "symlink_loop", "oversized")
PARAMS = file_params()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hostile")
    files: dict[str, Path] = {"dev_zero": Path("/dev/zero"), "dev_zero.toml": Path("/dev/zero")}
    for suffix in (".json", ".toml"):  # a preset option wants .toml before it reads
        tag = "" if suffix == ".json" else suffix
        fifo = d / f"fifo{suffix}"
        os.mkfifo(fifo)
        loop = d / f"loop{suffix}"
        os.symlink(loop, loop)
        big = d / f"big{suffix}"
        with big.open("wb") as fh:  # sparse: 8 GiB that take no disk
            fh.truncate(8 << 30)
        files.update({f"fifo{tag}": fifo, f"symlink_loop{tag}": loop, f"oversized{tag}": big})
    big_out = d / "big_out.json"
    with big_out.open("wb") as fh:  # an output's existing file may be backed up: keep it small
        fh.truncate(64 << 20)
    cfg = d / "cfg.json"
    cfg.write_text(json.dumps(CONFIG))
    out = d / "out"
    out.mkdir()
    files.update(oversized_out=big_out, cfg=cfg, out=out)
    _warm_up(cfg, out)
    return files


def _warm_up(cfg: Path, out: Path) -> None:
    """Run each command once here, so its lazy imports are done before the children fork
    (each child then costs milliseconds, not an import of half the package)."""
    runner = CliRunner()
    for args in (["check", str(cfg), "--num-gpus", "2"],
                 ["fix", str(cfg), "--num-gpus", "2", "--dry-run"],
                 ["plan", *TINY, "--num-gpus", "2"],
                 ["launch", *TINY, "--num-gpus", "2", "--dry-run"],
                 ["generate", *TINY, "--gpus", "2", "--out-dir", str(out)],
                 ["explain", "world_size 16 != 1 * 1 * 1"], ["presets", "list"],
                 ["presets", "show", "tiny_mamba"], ["runs"],
                 ["--auto", *TINY, "--num-gpus", "2", "--dry-run"]):
        runner.invoke(main, args)


@pytest.fixture(autouse=True)
def _no_gpu(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    patch_gpus(monkeypatch, NO_GPU)


def _case_argv(path: tuple[str, ...], cmd: click.Command, param: click.Parameter,
               target: Path, files: dict[str, Path]) -> list[str]:
    values = {k: v.format(cfg=files["cfg"], out=files["out"])
              for k, v in VALUES.get(path, {}).items()}
    values[param.name or ""] = str(target)
    extra = list(EXTRA.get(path, []))
    return argv(path, cmd, values, extra, fill=str(files["cfg"]))


def _problem(outcome: Outcome, may_succeed: bool) -> str | None:
    """Why this outcome breaks the promise, or None."""
    if not outcome.finished:
        return "did not finish (waits on the file?)"
    if outcome.error:
        return "raised:\n" + outcome.error[-1500:]
    lines = outcome.error_lines
    if outcome.exit_code == 0 and may_succeed:
        return None
    if outcome.exit_code == 0:
        return "exit 0: the hostile file was accepted"
    errors = [line for line in lines if line.startswith("error:")]
    if len(errors) > 1 or (lines and not errors):
        return f"exit {outcome.exit_code}, stderr has not one error line: {lines[-4:]}"
    if any("[WARNING]" in line or "Traceback" in line for line in lines):
        return f"a library warning or traceback on stderr: {lines[:3]}"
    if not lines and not outcome.stdout.strip():
        return f"exit {outcome.exit_code} without saying why"
    if "\x1b" in outcome.stdout + outcome.stderr:
        return "an escape byte in the output"
    return None


def test_the_tree_has_the_file_options_we_know() -> None:
    # the walk itself must work: these are there today (new ones only add to the list)
    found = {(path, p.name) for path, _, p in PARAMS}
    for known in [(("check",), "config"), (("check",), "hf_args"), (("check",), "hostfile"),
                  (("launch",), "data"), (("launch",), "tokenizer"), (("launch",), "resume"),
                  (("explain",), "source"), (("presets", "import"), "file"),
                  ((), "hostfile")]:
        assert known in found


@pytest.mark.parametrize("kind", KINDS)
def test_every_file_option_survives_hostile_files(kind: str, hostile: dict[str, Path]) -> None:
    failures = []
    for path, cmd, param in PARAMS:
        output = bool(OUTPUT_LIKE.search(param.name or ""))
        if output and not any(p.name == "dry_run" for p in cmd.params):
            # an output is written, not read (tests/core/test_fsio.py holds its refusals);
            # without a dry run, a valid command would do its real work here (tune runs
            # training), so only the commands that can stop short are fed one
            continue
        preset = "preset" in (param.name or "") or path[:1] == ("presets",)
        target = hostile["oversized_out" if kind == "oversized" and output
                         else kind + (".toml" if preset else "")]
        args = _case_argv(path, cmd, param, target, hostile)
        for name in ("oversized", "oversized.toml"):  # as big again, whatever ran before
            os.truncate(hostile[name], 8 << 30)
        outcome = run_isolated(args, timeout=30)
        # an output or a runs directory is not read: with --dry-run (or nothing there to
        # list) the command may succeed; it must still end, and never trace back
        problem = _problem(outcome, may_succeed=output)
        if problem:
            failures.append(f"ds-wizard {' '.join(args)}: {problem}")
    assert not failures, "\n\n".join(failures)


# ---------------------------------------------------------------- the check detects bypasses


def _group_with(command: click.Command) -> click.Group:
    """A copy of the root group with one more command (the real one stays untouched)."""
    group = type(main)(name="ds-wizard", params=list(main.params), callback=main.callback,
                       invoke_without_command=True)
    group.add_command(command, "zz-bypass")
    return group


@click.command("zz-bypass")
@click.option("--notes-file", type=click.Path(dir_okay=False))
def _raw_reader(notes_file: str | None) -> None:
    """A command that reads its file with a plain open(): what the reader exists to stop."""
    if notes_file:
        with open(notes_file, "rb") as fh:  # no regular-file check, no cap
            click.echo(len(fh.read()))


def test_an_option_that_bypasses_the_reader_fails_the_check(hostile: dict[str, Path]) -> None:
    from _cli_tree import names_a_file

    os.truncate(hostile["oversized"], 8 << 30)
    group = _group_with(_raw_reader)
    param = next(p for p in _raw_reader.params if p.name == "notes_file")
    assert names_a_file(param)  # the walk finds it, by its type and by its name
    fifo = run_isolated(["zz-bypass", "--notes-file", str(hostile["fifo"])], timeout=3,
                        cli=group)
    assert _problem(fifo, may_succeed=False) == "did not finish (waits on the file?)"
    zero = run_isolated(["zz-bypass", "--notes-file", "/dev/zero"], timeout=30, cli=group)
    problem = _problem(zero, may_succeed=False)
    assert problem is not None and "MemoryError" in problem
    # and the same command through the one reader passes
    from ds_wizard.core.base.fsio import read_input

    @click.command("zz-bypass")
    @click.option("--notes-file", type=click.Path(dir_okay=False))
    def safe(notes_file: str | None) -> None:
        if notes_file:
            click.echo(len(read_input(notes_file, limit=1 << 20, what="notes file")))

    good = _group_with(safe)
    for kind in KINDS:
        outcome = run_isolated(["zz-bypass", "--notes-file", str(hostile[kind])], timeout=30,
                               cli=good)
        assert _problem(outcome, may_succeed=False) is None, kind


def test_runner_sees_a_plain_success() -> None:
    # the harness itself: a valid command comes back finished, exit 0, no error
    outcome = run_isolated(["presets", "list"], timeout=60)
    assert outcome.finished and outcome.exit_code == 0 and outcome.error is None
    assert "tiny_mamba" in CliRunner().invoke(main, ["presets", "list"]).stdout


# ------------------------------------------------------------- no read outside the reader

ROOT = Path(__file__).resolve().parents[2]
READER = "ds_wizard/core/base/fsio.py"


def raw_reads(source: str) -> list[int]:
    """Lines of ``source`` that read a file without the one reader: ``open()`` or
    ``Path.open()`` in a read mode, ``Path.read_text()`` / ``Path.read_bytes()``."""
    import ast

    def mode_of(node: ast.Call, position: int) -> str:
        args = node.args[position:position + 1] + [k.value for k in node.keywords
                                                   if k.arg == "mode"]
        if args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
            return args[0].value
        return "r"

    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "open":
            if not set(mode_of(node, 1)) & set("wax"):
                found.append(node.lineno)
        elif isinstance(func, ast.Attribute):
            receiver_is_os = isinstance(func.value, ast.Name) and func.value.id == "os"
            opens = func.attr == "open" and not receiver_is_os \
                and not set(mode_of(node, 0)) & set("wax")
            if opens or func.attr in ("read_text", "read_bytes"):
                found.append(node.lineno)
    return sorted(found)


def test_no_module_reads_a_file_outside_the_reader() -> None:
    offenders = []
    for path in sorted((ROOT / "ds_wizard").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == READER:
            continue
        offenders += [f"{rel}:{n}" for n in raw_reads(path.read_text(encoding="utf-8"))]
    assert not offenders, "read these through ds_wizard/core/base/fsio.py: " + ", ".join(
        offenders)


def test_the_scan_sees_a_raw_read() -> None:
    assert raw_reads("open(p).read()\nPath(p).read_text()\nq.open('rb')\n") == [1, 2, 3]
    assert raw_reads("open(p, 'w')\nq.open('a')\nos.open(p, 0)\n") == []
