"""The shape of the command line itself: every command function is thin, and every
`Examples:` line of every --help runs.

The examples of one command run top to bottom in one scratch project, as a user following
the help would (``presets new my_7b`` before ``presets export my_7b``), with ``--dry-run``
where the line would train and ``--plain`` where it would open the terminal UI. Shell
around a line is honoured as far as it matters: ``VAR=value`` before it, ``~``, globs; what
it is piped into or redirected to is dropped, and a line that reads ``-`` gets a log on
standard input.
"""

from __future__ import annotations

import ast
import contextlib
import glob
import inspect
import json
import shlex
import shutil
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from fakes import FAKE_TRAINER, NO_GPU, SEED_CONFIG, patch_gpus

from ds_wizard.cli import main
from ds_wizard.core.presets.lookup import builtin_dir

MAX_COMMAND_LINES = 40


def _commands() -> Iterator[tuple[str, click.Command]]:
    ctx = click.Context(main)

    def walk(cmd: click.Command, path: str) -> Iterator[tuple[str, click.Command]]:
        yield path, cmd
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None
                yield from walk(sub, f"{path} {name}")

    return walk(main, "ds-wizard")


COMMANDS = dict(_commands())


def code_lines(fn: object) -> int:
    """The lines of a function from its ``def`` to its end, less its docstring (the --help
    text) and its decorators (the options)."""
    src, _ = inspect.getsourcelines(inspect.unwrap(fn))  # type: ignore[arg-type]
    node = ast.parse(textwrap.dedent("".join(src))).body[0]
    assert isinstance(node, ast.FunctionDef)
    first = node.body[0]
    doc = (first.end_lineno - first.lineno + 1  # type: ignore[operator]
           if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
           and isinstance(first.value.value, str) else 0)
    return node.end_lineno - node.lineno + 1 - doc  # type: ignore[operator]


def test_no_command_function_is_longer_than_40_lines() -> None:
    """A command parses, calls one core function and prints its result: decisions live in
    core, where they have their own tests (docs/architecture.md)."""
    lengths = {path: code_lines(cmd.callback) for path, cmd in COMMANDS.items()
               if cmd.callback is not None}
    assert len(lengths) >= 15  # the walk found the commands, subcommands included
    assert {p: n for p, n in lengths.items() if n > MAX_COMMAND_LINES} == {}


def test_the_line_counter_counts_code_not_help_or_options() -> None:
    @click.command()
    @click.option("--x")
    def sample(x: str) -> None:
        """Help.

        More help.
        """
        print(x)
        print(x)

    assert code_lines(sample.callback) == 3


# --------------------------------------------------------------------------- examples


def examples(cmd: click.Command) -> list[str]:
    """The lines under ``Examples:`` in a command's help."""
    text = (cmd.help or "").partition("xamples:")[2]
    return [line.strip() for line in text.splitlines() if line.strip()]


EXPLAINED_LOG = ("[rank0]: AssertionError: Check batch related parameters. train_batch_size "
                 "is not equal to micro_batch_per_gpu * gradient_acc_step * world_size "
                 "16 != 4 * 8 * 4\n")


def _project(root: Path) -> None:
    """What a user running the examples has at hand: configs, a log, a hostfile, a corpus,
    preset files, and an earlier run with a checkpoint."""
    from ds_wizard.core.config.dsconfig import dumps
    from ds_wizard.core.runs import rundir
    from ds_wizard.core.runs.runspec import Accelerator
    from ds_wizard.launch.plan import LaunchRequest, prepare_run

    fixed = {**SEED_CONFIG, "train_batch_size": 128}  # the source document's fix, 4 GPUs
    files = {
        "deepspeed_config.json": dumps(fixed),
        "deepspeed_4gpu.json": dumps(fixed),
        # no train_batch_size: DeepSpeed derives it, so it holds for any world size
        "ds.json": dumps({k: v for k, v in SEED_CONFIG.items() if k != "train_batch_size"}),
        "ds_zero3_auto.json": dumps({"train_batch_size": "auto",
                                     "train_micro_batch_size_per_gpu": "auto",
                                     "gradient_accumulation_steps": "auto",
                                     "zero_optimization": {"stage": 3}}),
        "ds_config.json": dumps(SEED_CONFIG),
        "train.log": "loading...\n" + EXPLAINED_LOG,
        "hosts": "node1 slots=8\nnode2 slots=8\n",
        "corpus.jsonl": "".join(json.dumps({"text": f"line {i} of a corpus " * 20}) + "\n"
                                for i in range(200)),
    }
    for name, text in files.items():
        (root / name).write_text(text, encoding="utf-8")
    builtin = builtin_dir()
    for where in ("presets", "team-presets"):
        shutil.copytree(builtin, root / where)
    for name in ("teammate.toml", "shared.toml", "candidate.toml",
                 "home/Downloads/their_7b.toml"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(builtin / "7b_mamba.toml", root / name)
    cpu = Accelerator("cpu", 0, "test: no GPU")
    plan = prepare_run(LaunchRequest("tiny_mamba", steps=50, runs_dir=root / "runs",
                                     accelerator=cpu))
    assert plan.run_dir is not None
    run = plan.run_dir.rename(root / "runs" / "tiny_mamba-20261129-131839")
    tag = rundir.RunPaths(run).checkpoints / rundir.checkpoint_tag(10)
    tag.mkdir(parents=True)
    (tag / "mp_rank_00_model_states.pt").write_bytes(b"model" * 100)
    rundir.write_marker(tag.parent, tag.name, 10, {})
    rundir.RunPaths(run).log.write_text("step 10 loss 2.0\n", encoding="utf-8")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    _project(root)
    return root


def as_run(line: str, cwd: Path) -> tuple[list[str], dict[str, str], str | None]:
    """The ds-wizard arguments of an example line, its environment, and its stdin."""
    stdin = None
    if not line.startswith("ds-wizard") and "| ds-wizard" in line:  # a log piped in
        line, stdin = "ds-wizard" + line.rpartition("| ds-wizard")[2], EXPLAINED_LOG
    words = shlex.split(line, comments=True)
    env = {}
    while "=" in words[0]:
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    assert words[0] == "ds-wizard", line
    args: list[str] = []
    for word in words[1:]:
        if word in ("|", ">"):
            break  # what the output is piped into or written to is the shell's business
        word = word.replace("~", str(cwd / "home"))
        matched = sorted(glob.glob(word, root_dir=cwd)) if "*" in word else [word]
        args += matched or [word]  # as a shell keeps a pattern that matches nothing
    if args[:1] in (["launch"], ["tune"]) and "--dry-run" not in args \
            and "--slurm" not in args:
        args.append("--dry-run")  # it would train
    if args[:1] == ["attach"] and "--plain" not in args:
        args.append("--plain")  # it would open the terminal UI
    return args, env, stdin


#: the doctor's verdict is about this machine (and its hosts): exit 1 with a failed check,
#: in text or JSON, is an answer
VERDICT_OF_THE_MACHINE = {"doctor": ("✘ the job cannot run here", '"status": "fail"')}

#: examples that fail on some machines today, with the words of their failure: each is a
#: bug to fix (then its entry goes); any other failure of the line still fails the test
KNOWN_FAILURES = {
    # the doctor's checks (host RAM, DeepSpeed ops) run on this machine for a job that only
    # writes scripts for other nodes (--slurm, --hostfile), so a small head machine, or one
    # without CUDA, refuses them
    "ds-wizard generate --preset mamba_1.4b --hostfile hosts": "refused before launch: ",
    "ds-wizard launch --preset mamba_1.4b --num-nodes 4 --gpus-per-node 8 --slurm":
        "refused before launch: ",
    "ds-wizard generate --preset mamba_1.4b --num-nodes 2 --gpus-per-node 8 --slurm":
        "refused before launch: ",
}

#: examples that need a real DeepSpeed checkpoint (a real training run): the fast lane's
#: project has a stand-in one, so they run in the slow lane against the session's trained run
#: (test_checkpoint_examples_on_a_real_run)
NEEDS_A_REAL_CHECKPOINT = ("ds-wizard checkpoint convert", "ds-wizard checkpoint export")

#: what a user has done before a command's examples make sense
BEFORE = {"ds-wizard presets diff": ["presets new my_7b --from 7b_mamba --set model.n_layer=48"]}


def _start_held_runs(runs: Path) -> list[Path]:
    """Two runs whose job (a stand-in trainer that holds) runs under its real supervisor,
    for `stop`: the fixture's named run, and a newer one that `latest` names."""
    from dataclasses import replace

    from ds_wizard.core.runs.runspec import Accelerator
    from ds_wizard.launch.client import start_supervisor
    from ds_wizard.launch.plan import LaunchRequest, prepare_run

    plan = prepare_run(LaunchRequest("tiny_mamba", steps=50, runs_dir=runs,
                                     accelerator=Accelerator("cpu", 0, "test: no GPU")))
    script = runs / "fake_train.py"
    script.write_text(FAKE_TRAINER, encoding="utf-8")
    started = []
    for run_dir in (runs / "tiny_mamba-20261129-131839", plan.run_dir):
        assert run_dir is not None
        held = replace(plan, run_dir=run_dir,
                       command=(sys.executable, str(script), str(run_dir), "3", "hold"))
        start_supervisor(held, grace_s=10, detach=True)
        started.append(run_dir)
    return started


def _end_runs(run_dirs: list[Path]) -> None:
    from ds_wizard.core.base.errors import DsWizardError
    from ds_wizard.launch.client import stop_run

    for run_dir in run_dirs:
        with contextlib.suppress(DsWizardError):  # already stopped by the example
            stop_run(run_dir, now=True)


EXAMPLES = [pytest.param(p, marks=[pytest.mark.slow] if p == "ds-wizard stop" else [])
            for p, c in COMMANDS.items() if examples(c)]


@pytest.mark.parametrize("path", EXAMPLES)
def test_every_example_in_help_runs(path: str, project: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "project"
    shutil.copytree(project, scratch)
    monkeypatch.chdir(scratch)
    monkeypatch.setenv("HOME", str(scratch / "home"))
    monkeypatch.setenv("DS_WIZARD_CONFIG_DIR", str(scratch / "home" / "config"))
    monkeypatch.delenv("DS_WIZARD_PRESET_PATH", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    patch_gpus(monkeypatch, NO_GPU)  # what a launch would start: nothing, or CPU ranks
    runner = CliRunner()
    for line in BEFORE.get(path, []):
        assert runner.invoke(main, shlex.split(line)).exit_code == 0, line
    held = _start_held_runs(scratch / "runs") if path == "ds-wizard stop" else []
    try:
        for line in examples(COMMANDS[path]):
            if line.startswith(NEEDS_A_REAL_CHECKPOINT):
                continue
            args, env, stdin = as_run(line, scratch)
            result = runner.invoke(main, args, env=env, input=stdin)
            known = KNOWN_FAILURES.get(line.partition("#")[0].strip())
            if known is not None and result.exit_code == 1 and known in result.output:
                continue
            verdict = VERDICT_OF_THE_MACHINE.get(args[0])
            if verdict is not None and result.exit_code == 1 and any(
                    v in result.output for v in verdict):
                continue
            assert result.exit_code == 0, (line, args, result.output, result.exception)
    finally:
        _end_runs(held)


@pytest.mark.slow
def test_checkpoint_examples_on_a_real_run(trained: tuple[Path, str, int], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`checkpoint convert` and `export`'s examples, on a copy of a real 2-rank run named as
    the examples name it."""
    from fakes import copy_run

    run_dir, out, code = trained
    assert code == 0, out
    copy = copy_run(run_dir, tmp_path / "runs")
    copy.rename(copy.parent / "tiny_mamba-20261129-131839")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    lines = [line for path in ("ds-wizard checkpoint convert", "ds-wizard checkpoint export")
             for line in examples(COMMANDS[path])]
    assert lines
    for line in lines:
        args, env, stdin = as_run(line, tmp_path)
        args = [a.replace("global_step20", "global_step30") for a in args]  # the run's last
        result = runner.invoke(main, args, env=env, input=stdin)
        assert result.exit_code == 0, (line, result.output, result.exception)
