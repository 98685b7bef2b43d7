"""Pilot tests for issue 14: the wizard never freezes, never swaps the user's choice."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_tui import settle, text_of, to_batch
from test_tui_fakes import fake_gpus, isolate
from textual import events
from textual.app import App, ComposeResult
from textual.widgets import Input

from ds_wizard.app import make_app
from ds_wizard.screens.widgets import OrderedInput

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("work")]


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate(tmp_path, monkeypatch)


def one_read(app: App, keys: str) -> None:
    """Queue keys the way the driver does for one terminal read: all at once, no pause."""
    names = {"\x7f": ("backspace", None), "\x1b[D": ("left", None)}
    for key in keys:
        name, char = names.get(key, (key, key))
        app.post_message(events.Key(name, char))


# -- fault 6: keys in one read ------------------------------------------------------------
class _OneField(App[None]):
    def __init__(self, cls: type[Input]) -> None:
        super().__init__()
        self.cls = cls

    def compose(self) -> ComposeResult:
        yield self.cls(value="12", id="f", select_on_focus=False)


async def test_plain_textual_input_reorders_a_backspace_and_a_digit() -> None:
    # documents the upstream behaviour the wizard works around (Textualize/textual#6605);
    # if Textual fixes it, this fails and the workaround can go
    app = _OneField(Input)
    async with app.run_test() as pilot:
        one_read(app, ["\x7f", "3"])
        await pilot.pause()
        await pilot.pause()
        assert app.query_one(Input).value == "12"


async def test_ordered_input_applies_keys_of_one_read_in_order() -> None:
    app = _OneField(OrderedInput)
    async with app.run_test() as pilot:
        one_read(app, ["\x7f", "3", "\x7f", "\x7f", "4", "5", "\x1b[D", "\x7f", "6"])
        await pilot.pause()
        await pilot.pause()
        # 12 → 1 → 13 → 1 → "" → 4 → 45 → cursor before 5 → 5 → 65
        assert app.query_one(Input).value == "65"


async def test_batch_field_gets_the_right_value_from_one_read() -> None:
    app = make_app(fake_gpus(4), cursor_blink=False)
    async with app.run_test(size=(100, 32)) as pilot:
        await to_batch(pilot)
        field = app.screen.query_one("#micro", Input)
        assert app.focused is field
        field.value = "12"
        field.action_end()
        await pilot.pause()
        one_read(app, ["\x7f", "\x7f", "8"])
        await settle(pilot)
        assert field.value == "8"
        assert "8 ×" in text_of(app, "#formula")


# -- fault 2: an invalid preset is refused, never replaced --------------------------------
async def test_invalid_preset_cannot_be_carried_forward(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_tui import record_notifications
    from textual.widgets import DataTable

    team = work / "team"
    team.mkdir()
    (team / "tiny_mamba.toml").write_text("[model]\nd_model = 0\n")
    monkeypatch.setenv("DS_WIZARD_PRESET_PATH", str(team))
    app = make_app(fake_gpus(2), cursor_blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+n")
        await pilot.pause()
        shown = record_notifications(app)
        screen = app.screen
        table = screen.query_one("#preset-table", DataTable)
        keys = screen.rows
        table.move_cursor(row=keys.index("7b_mamba"))
        await pilot.pause()
        assert app.state.preset is not None and app.state.preset.name == "7b_mamba"
        table.move_cursor(row=keys.index("tiny_mamba"))
        await pilot.pause()
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert app.screen.step == "preset"
        assert app.state.preset is None and app.state.preset_ref == "tiny_mamba"
        assert any("d_model = 0" in m for m in shown), shown
