"""Issue 23, "one printer": a terminal escape fed through every option and argument of
every command (found by walking the click tree) never reaches the output raw, on the text
path or the ``--json`` path; JSON output escapes C1 and bidi controls and still reads back.

Every write to stdout and stderr passes ``core/base/text.py: terminal_safe`` (installed by
``ds_wizard/outputs.py``), and JSON is printed by ``json_text``: these tests hold both, for
the commands there are today and the ones added later.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
from _cli_tree import OUTPUT_LIKE, argv, run_isolated, walk
from fakes import NO_GPU, patch_gpus

from ds_wizard.core.base.text import json_text, terminal_safe

HOSTILE = "x\x1b]52;c;cHduZWQ=\x07\x1b[2J\x9b31m\u202e\x85y"
BAD = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


@pytest.fixture(autouse=True)
def _no_gpu(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    patch_gpus(monkeypatch, NO_GPU)


def _cases() -> list[list[str]]:
    cases = []
    for path, cmd in walk():
        if isinstance(cmd, click.Group) and path:
            continue
        base = ["--auto", "--dry-run"] if not path else []
        json_flag = [p.opts[0] for p in cmd.params
                     if isinstance(p, click.Option) and p.name == "as_json"]
        for param in cmd.params:
            if isinstance(param, click.Option) and (param.is_flag or param.count):
                continue
            if param.name in ("help", "version"):
                continue
            if OUTPUT_LIKE.search(param.name or "") and not any(
                    p.name == "dry_run" for p in cmd.params):
                continue  # a valid command would do its real work first (tune trains)
            for extra in ([], json_flag):
                # a dry run wherever the command has one: nothing may start for real
                dry = ["--dry-run"] if any(p.name == "dry_run" for p in cmd.params) else []
                args = argv(path, cmd, {param.name or "": HOSTILE}, [*base, *dry, *extra],
                            fill=HOSTILE)
                cases.append(args)
    return cases


def test_an_escape_through_every_option_of_every_command() -> None:
    cases = _cases()
    assert len(cases) > 50
    failures = []
    for args in cases:
        outcome = run_isolated(args, timeout=60)
        if not outcome.finished:
            failures.append(f"{args!r}: did not finish")
        elif outcome.error:
            failures.append(f"{args!r}: raised\n{outcome.error[-800:]}")
        elif BAD.search(outcome.stdout + outcome.stderr):
            found = BAD.search(outcome.stdout + outcome.stderr).group()  # type: ignore[union-attr]
            failures.append(f"{args!r}: {found!r} reached the output")
    assert not failures, "\n".join(failures[:20])


def test_json_text_escapes_and_reads_back() -> None:
    data = {"k\x9b": ["v\u202e\x1b[2J×\u2028", {"n": 1}]}
    text = json_text(data)
    assert not BAD.search(text) and "\u2028" not in text
    assert "×" in text  # other text stays readable
    assert json.loads(text) == data


def test_terminal_safe_keeps_styling_only_on_a_terminal() -> None:
    styled = "\x1b[1mbold\x1b[0m \x1b]52;c;eA==\x07 \x9b6n \x1b[6n"
    assert terminal_safe(styled, tty=False) == "bold   "
    assert terminal_safe(styled, tty=True) == "\x1b[1mbold\x1b[0m   "
