"""Issue 23, "one printer" in the TUI: a run name, a log line or a notification holding a
terminal escape is shown without it (the CLI side is tests/cli/test_safety_printer.py)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import textual.app
from test_tui_runs import rows_of
from tui_pilot import FakeRuns, open_runs, wizard

from ds_wizard.app import WizardApp
from ds_wizard.screens.widgets import FollowLog, safe_markup

ESC = "\x1b]52;c;cHduZWQ=\x07\x1b[2J\x9b31m\u202e"
BAD = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def test_every_notification_is_sanitized(monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[str] = []
    monkeypatch.setattr(textual.app.App, "notify",
                        lambda self, message, *a, **k: shown.append(message))
    app = WizardApp.__new__(WizardApp)  # notify needs no mounted app
    app.notify(f"cannot load {ESC}x.toml")
    assert shown == ["cannot load x.toml"]


def test_log_lines_are_sanitized() -> None:
    written: list[list[str]] = []
    fake = SimpleNamespace(write_lines=lambda lines, scroll_end: written.append(lines),
                           following=False)
    FollowLog.add_lines(fake, [f"step 1 {ESC}loss 2.0"])  # type: ignore[arg-type]
    assert written == [["step 1 loss 2.0"]]


def test_markup_from_files_is_sanitized_and_escaped() -> None:
    assert safe_markup(f"[b]{ESC}name[/b]") == r"\[b]name\[/b]"


@pytest.mark.anyio
async def test_a_run_named_with_an_escape_shows_none(work: Path, fake_runs: FakeRuns) -> None:
    fake = fake_runs
    app = wizard(runs_api=fake, cwd=work)
    fake.rows = [replace(fake.rows[0], name=f"evil{ESC}", preset=f"p{ESC}"), *fake.rows[1:]]
    async with app.run_test(size=(140, 40)) as pilot:  # type: ignore[attr-defined]
        screen = await open_runs(pilot)
        cells = [c for row in rows_of(screen).values() for c in row]
        assert any(c.startswith("evil") for c in cells)
        assert not any(BAD.search(c) for c in cells)
