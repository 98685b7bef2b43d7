"""Every command's --help works and shows how to use it: an examples section whose lines
run that very command."""

from __future__ import annotations

import json
import re

import click
import pytest
from click.testing import CliRunner

from ds_wizard.cli import main

# "Examples:" in the commands, "Headless examples:" on the top-level group
HEADING = re.compile(r"^\s*(?:\w+ )?examples:\s*$", re.IGNORECASE)


def command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The group itself and every command below it, through the lazy registration."""
    ctx = click.Context(group, info_name="ds-wizard")
    paths = [prefix]
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        path = (*prefix, name)
        assert cmd is not None, f"{' '.join(path)} is listed but cannot be loaded"
        if isinstance(cmd, click.Group):
            paths += command_paths(cmd, path)
        else:
            paths.append(path)
    return paths


PATHS = command_paths(main)


def test_the_walk_reaches_the_lazy_commands_and_presets_subcommands():
    assert {("check",), ("fix",), ("generate",), ("gpus",), ("plan",), ("launch",),
            ("presets",), ("presets", "show"), ("presets", "validate")} <= set(PATHS)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "ds-wizard")
def test_help_exits_0_with_examples_of_the_command(path):
    result = CliRunner().invoke(main, [*path, "--help"], prog_name="ds-wizard")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("Usage: ds-wizard " + " ".join(path)), lines[0]
    starts = [i for i, line in enumerate(lines) if HEADING.match(line)]
    assert starts, f"no examples section in:\n{result.output}"
    # the section runs to the next blank line; at least one example runs this command
    section = []
    for line in lines[starts[0] + 1:]:
        if not line.strip():
            break
        section.append(line.strip())
    command = " ".join(("ds-wizard", *path))
    assert any(line.startswith(command) for line in section), section


def test_plan_takes_the_common_flag_names_and_keeps_the_old_ones_hidden(runner) -> None:
    args = ["plan", "--preset", "7b_mamba", "--num-gpus", "8", "--gpu-memory", "80GiB", "--json"]
    new = runner.invoke(main, [*args, "--micro-batch", "2", "--zero-stage", "3"])
    old = runner.invoke(main, [*args, "--micro", "2", "--zero", "3"])
    assert new.exit_code == old.exit_code
    assert new.stdout == old.stdout
    assert json.loads(new.stdout)["estimate"]["settings"]["zero_stage"] == 3
    assert "--micro is deprecated" in old.stderr and "use --micro-batch" in old.stderr
    assert "deprecated" not in new.stderr
    help_text = runner.invoke(main, ["plan", "--help"]).output
    assert "--micro-batch" in help_text and "--zero-stage" in help_text
    assert "--micro " not in help_text and "--zero " not in help_text


def test_an_auto_only_flag_without_auto_gives_an_example_that_does_not_repeat_it(runner):
    result = runner.invoke(main, ["--num-gpus", "4"])
    assert result.exit_code == 2
    assert "e.g. ds-wizard --auto --num-gpus 4)" in result.output
    assert result.output.count("--num-gpus") == 2
