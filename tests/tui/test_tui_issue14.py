"""Pilot tests for issue 14: the wizard never freezes, never swaps the user's choice."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import gpu_probe, no_gpus, script_job_factory, wait_for
from textual import events
from textual.app import App, ComposeResult
from textual.widgets import Input
from tui_pilot import (
    record_notifications,
    settle,
    text_of,
    to_batch,
    to_launch,
    type_into,
    wizard,
)

from ds_wizard.screens.widgets import OrderedInput

pytestmark = [pytest.mark.anyio]


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
    app = wizard()
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
    from textual.widgets import DataTable

    team = work / "team"
    team.mkdir()
    (team / "tiny_mamba.toml").write_text("[model]\nd_model = 0\n")
    monkeypatch.setenv("DS_WIZARD_PRESET_PATH", str(team))
    app = wizard(gpu_probe(2))
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
        assert "d_model = 0" in text_of(app, "#not-yet")
        assert not shown


# -- fault 1: pathological inputs answer at once; ^q and SIGTERM still work ----------------
async def test_solve_freeze_input_answers_and_ctrl_q_quits() -> None:
    # one GPU, global batch 2,000,000 with accumulation derived: solve() used to walk
    # for ~30 s on the UI thread here
    app = wizard(gpu_probe(1))
    async with app.run_test(size=(100, 32)) as pilot:
        await to_batch(pilot)
        await pilot.press("ctrl+g")  # derive gradient accumulation
        await type_into(pilot, "#global", "2000000")
        await settle(pilot)
        assert "2000000 is not reachable on 1" in str(
            app.screen.query_one("#pairs").border_title)
        await pilot.press("ctrl+q")
        await pilot.pause()
    assert app.return_code == 0  # the app ended on ^q


async def test_huge_micro_batch_is_refused_like_the_cli_and_sigterm_quits() -> None:
    import os
    import signal

    from ds_wizard.app import exit_on_signals

    app = wizard(gpu_probe(8))
    async with app.run_test(size=(100, 32)) as pilot:
        previous = exit_on_signals(app)
        try:
            await to_batch(pilot)
            await type_into(pilot, "#micro", "99999999999999999999")
            await settle(pilot)
            errors = text_of(app, "#field-errors")
            assert ("micro-batch is 99999999999999999999, implausibly large "
                    "(over 16,777,216); check for an extra digit") in errors
            # nothing is derived from a refused value: no stale product beside the error
            assert app.state.derive == "global"
            assert app.screen.query_one("#global", Input).value == ""
            os.kill(os.getpid(), signal.SIGTERM)
            await pilot.pause()
            await pilot.pause()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    assert app.return_code == 0


# -- fault 3: planning for another machine ------------------------------------------------
async def test_other_machine_mode_refuses_a_cpu_launch_of_4_gpus(work: Path) -> None:
    from ds_wizard.screens.dialogs import ConfirmScreen

    app = wizard(no_gpus)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(pilot)
        await type_into(pilot, "#per-node", "4")
        await pilot.pause()
        assert app.state.planning_elsewhere and app.state.world_size == 4
        assert text_of(app, "#step-bar").startswith(" ⚑ other machine (4 GPUs)")
        for _ in range(3):
            await pilot.press("ctrl+n")
            await settle(pilot)
            assert "⚑ other machine (4 GPUs)" in text_of(app, "#step-bar")
        assert app.screen.step == "review"
        assert "GPU" in text_of(app, "#review-summary") or app.screen.result is not None
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")  # save and go on
        await settle(pilot)
        assert app.screen.step == "launch"
        script = work / "ds_config.launch.sh"
        assert (work / "ds_config.json").exists() and script.exists()
        assert "--num-gpus 4" in script.read_text()
        assert "Planning for another machine" in text_of(app, "#launch-info")
        assert not app.screen.check_action("start", ())  # ^l is not offered
        await pilot.press("ctrl+l")
        app.screen.action_start()  # even when called directly (the palette)
        await settle(pilot)
        assert not app.screen.running and app.screen.job is None


def test_the_job_factory_refuses_another_machines_plan(work: Path) -> None:
    from ds_wizard.core.base.errors import DsWizardError
    from ds_wizard.core.presets.lookup import load_preset
    from ds_wizard.screens.jobs import launcher_job
    from ds_wizard.screens.state import WizardState

    state = WizardState(report=no_gpus(), gpus_per_node=4, preset=load_preset("tiny_mamba"),
                        saved_path=work / "ds_config.json")
    with pytest.raises(DsWizardError, match="planned for another machine"):
        launcher_job(state)


# -- fault 4: following the log survives a resize -----------------------------------------
async def test_resize_keeps_following_and_the_indicator_says_so(work: Path) -> None:
    from ds_wizard.screens.widgets import FollowLog

    factory = script_job_factory(work, steps=40, hold=True)
    app = wizard(job_factory=factory)
    async with app.run_test(size=(100, 30)) as pilot:
        await to_launch(pilot, save=False)
        await pilot.press("ctrl+l")
        screen = app.screen
        log = screen.query_one("#log", FollowLog)
        await wait_for(pilot, lambda: "step 40 loss 0.1250" in log.lines)
        await pilot.resize_terminal(60, 20)
        await pilot.pause(0.3)
        await pilot.resize_terminal(120, 40)
        await pilot.resize_terminal(60, 20)
        await pilot.pause(0.3)
        assert log.following and log.border_subtitle == "following"
        assert log.scroll_y == log.max_scroll_y > 0
        log.focus()
        await pilot.press("up")
        await pilot.pause()
        assert not log.following and log.border_subtitle == "paused — End to follow"
        await pilot.press("end")
        await pilot.pause()
        assert log.following and log.scroll_y == log.max_scroll_y
        screen.stop_job()
        await wait_for(pilot, lambda: not screen.running)


# -- fault 5: no stale field error next to a valid formula --------------------------------
async def test_derived_field_error_is_computed_from_current_values() -> None:
    app = wizard(gpu_probe(2))
    async with app.run_test(size=(100, 32)) as pilot:
        await to_batch(pilot)
        await pilot.press("ctrl+g")  # derive gradient accumulation
        await type_into(pilot, "#global", "2")  # 2 // 4 // 2 = 0: DeepSpeed's own error
        await settle(pilot)
        await type_into(pilot, "#global", "16")
        await settle(pilot)
        assert "✔ 16 = " in text_of(app, "#formula")
        assert not app.screen.query_one("#field-errors").display
        assert "must be 1 or more" not in text_of(app, "#field-errors")


# -- fault 7: the smaller ones ------------------------------------------------------------
async def test_nearest_global_gives_a_valid_triple_when_checking_all_three() -> None:
    from textual.widgets import OptionList

    app = wizard()
    async with app.run_test(size=(100, 32)) as pilot:
        await to_batch(pilot)
        for _ in range(3):  # global → gas → micro → none (check all three)
            await pilot.press("ctrl+g")
        await pilot.pause()
        assert app.state.derive == "none"
        await type_into(pilot, "#global", "102")
        await settle(pilot)
        pairs = app.screen.query_one("#pairs", OptionList)
        pairs.focus()
        await pilot.press("end", "enter")  # use global 104 (nearest above)
        await settle(pilot)
        assert app.state.global_text == "104"
        assert "✔ 104 = " in text_of(app, "#formula")


async def test_cpu_demo_says_per_rank_and_radio_has_a_glyph() -> None:
    from textual.widgets import Label

    from ds_wizard.screens.widgets import MarkedRadioButton

    app = wizard(no_gpus)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+t")  # CPU demo
        await pilot.pause()
        await pilot.press("ctrl+n")
        await settle(pilot)
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert app.screen.step == "batch"
        assert str(app.screen.query_one("#micro-label", Label).render()) == \
            "Micro-batch per rank"
        assert "Memory per rank" in text_of(app, "#memory")
        buttons = list(app.screen.query(MarkedRadioButton))
        assert [b.BUTTON_INNER for b in buttons] == ["●", " ", " ", " "]


# -- fault 8: Textual idioms --------------------------------------------------------------
async def test_entering_the_batch_step_works_it_out_once() -> None:
    app = wizard()
    async with app.run_test(size=(100, 32)) as pilot:
        await to_batch(pilot)
        await settle(pilot)
        assert app.screen.recomputes == 1
        await type_into(pilot, "#micro", "8")
        await settle(pilot)
        # end + ctrl+u + "8": two edits (cleared, then 8), one recompute each
        assert app.screen.recomputes == 3


async def test_a_failing_worker_is_shown_and_the_app_lives_on() -> None:
    def broken_probe():
        raise RuntimeError("NVML exploded")

    app = wizard(broken_probe)
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.pause(0.2)
        shown = record_notifications(app)
        app.screen.action_redetect()
        for _ in range(10):  # settle() would re-raise the worker's error
            await pilot.pause(0.05)
        assert any("RuntimeError: NVML exploded" in m for m in shown), shown
        assert app.is_running and app.screen.step == "gpus"


def test_bindings_have_ids_and_tooltips() -> None:
    from textual.binding import Binding

    from ds_wizard.app import STEPS, WizardApp
    from ds_wizard.screens.base import WizardScreen
    from ds_wizard.screens.runs import RunsScreen

    classes = [WizardApp, WizardScreen, RunsScreen] + [factory for _, _, factory in STEPS]
    for cls in classes:
        for binding in cls.__dict__.get("BINDINGS", []):
            assert isinstance(binding, Binding) and binding.id and binding.tooltip, \
                (cls.__name__, binding)
