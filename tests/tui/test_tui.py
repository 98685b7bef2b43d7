"""Pilot tests of the wizard: each screen, and full keyboard walk-throughs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from fakes import gpu_probe, no_gpus, run_cli, wait_for
from textual.widgets import DataTable, Input, OptionList, Static
from tui_pilot import (
    clear_and_type,
    forward,
    record_notifications,
    settle,
    text_of,
    to_batch,
    type_micro_gas,
    wizard,
)

from ds_wizard.core.batch.choice import choose_batch
from ds_wizard.core.presets.lookup import load_preset, read_preset_file
from ds_wizard.core.presets.overrides import with_batch

pytestmark = [pytest.mark.anyio]


def auto_cli(output: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli("--auto", *args, "--output", str(output), cwd=output.parent, timeout=60)


# -- the walk-throughs the issue asks for ------------------------------------------------
async def test_walkthrough_saves_what_auto_writes(work: Path) -> None:
    app = wizard(output="tui.json")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.screen.step == "gpus"
        assert "4 GPU(s) detected" in text_of(app, "#gpu-status")
        assert app.screen.query_one("#gpu-table", DataTable).row_count == 4
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.screen.step == "preset"
        table = app.screen.query_one("#preset-table", DataTable)
        table.focus()
        await pilot.press("down", "up")  # 7b_mamba is the first row
        assert app.state.preset is not None and app.state.preset.name == "7b_mamba"
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.screen.step == "batch"
        await type_micro_gas(pilot, "4", "8")
        await pilot.pause()
        formula = app.screen.query_one("#formula", Static)
        assert "128 = 4 × 8 × 4" in str(formula.render())
        assert formula.has_class("ok") and not formula.has_class("bad")
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.screen.step == "review"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "check: valid" in text_of(app, "#verdict")
    saved = work / "tui.json"
    cli = auto_cli(work / "cli.json", "--num-gpus", "4", "--preset", "7b_mamba")
    assert cli.returncode == 0, cli.stderr
    assert saved.read_bytes() == (work / "cli.json").read_bytes()


async def test_walkthrough_wrong_global_shows_deepspeed_message() -> None:
    app = wizard()
    toasts = record_notifications(app)
    async with app.run_test(size=(80, 24)) as pilot:
        await to_batch(pilot)
        await type_micro_gas(pilot, "4", "8")
        # derive nothing: all three values go to DeepSpeed, as in a hand-written file
        await pilot.press("ctrl+g", "ctrl+g", "ctrl+g")
        assert app.state.derive == "none"
        await pilot.press("tab")
        assert app.focused is not None and app.focused.id == "global"
        await clear_and_type(pilot, "16")
        await pilot.pause()
        formula = app.screen.query_one("#formula", Static)
        shown = str(formula.render())
        assert "16 != 4 × 8 × 4" in shown
        assert ("Check batch related parameters. train_batch_size is not equal to "
                "micro_batch_per_gpu * gradient_acc_step * world_size 16 != 4 * 8 * 4") in shown
        assert formula.has_class("bad")
        # DeepSpeed would refuse it, so the wizard does too
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.screen.step == "batch"
        # said in place, above the footer, not in a toast over the pair list
        assert text_of(app, "#not-yet").startswith(
            "✘ Not yet: DeepSpeed would reject this: Check batch")
        assert not toasts
        await clear_and_type(pilot, "128")
        await pilot.pause()
        assert not app.screen.query_one("#not-yet").display  # no stale message


# -- GPUs ----------------------------------------------------------------------------------
async def test_gpu_screen_nodes_and_cuda_visible_devices() -> None:
    app = wizard(gpu_probe(2, cvd="2,3"))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert "CUDA_VISIBLE_DEVICES=2,3" in text_of(app, "#gpu-status")
        app.screen.query_one("#nodes", Input).focus()
        await clear_and_type(pilot, "3")
        await pilot.pause()
        assert app.state.world_size == 6
        assert "world size: 6" in text_of(app, "#gpu-summary")
        await clear_and_type(pilot, "x")
        await pilot.pause()
        assert "'x' is not a whole number" in text_of(app, "#gpu-summary")
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.screen.step == "gpus"


async def test_gpu_screen_without_gpu_offers_count_and_cpu_demo() -> None:
    app = wizard(no_gpus)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert "No GPU found" in text_of(app, "#no-gpu")
        assert not app.screen.query_one("#gpu-table").display
        await pilot.press("ctrl+n")  # nothing to train on yet
        await pilot.pause()
        assert app.screen.step == "gpus"
        app.screen.query_one("#per-node", Input).focus()
        await clear_and_type(pilot, "8")
        await pilot.pause()
        assert app.state.world_size == 8
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert app.state.cpu_demo and app.state.world_size == 2
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.state.preset is not None and app.state.preset.name == "tiny_mamba"


# -- preset --------------------------------------------------------------------------------
async def test_preset_screen_lists_exact_counts_and_loads_a_path(work: Path) -> None:
    custom = work / "mine.toml"
    builtin = (Path(__file__).parents[2] / "presets" / "tiny_mamba.toml").read_text()
    custom.write_text(builtin.replace('description = "', 'description = "My copy: '))
    app = wizard()
    async with app.run_test(size=(120, 40)) as pilot:
        await forward(pilot, 1)
        table = app.screen.query_one("#preset-table", DataTable)
        names = [str(table.get_row_at(i)[0]) for i in range(table.row_count)]
        assert {"7b_mamba", "tiny_mamba", "mamba_130m", "mamba2_130m"} <= set(names)
        row = table.get_row_at(names.index("7b_mamba"))
        assert str(row[2]) == "6,945,935,360" and str(row[1]) == "mamba1"
        assert "6,945,935,360" in text_of(app, "#preset-desc")
        await pilot.press("ctrl+o")
        await pilot.press(*list(str(custom)), "enter")
        await pilot.pause()
        assert app.state.preset is not None and app.state.preset.path == custom
        assert "My copy" in text_of(app, "#preset-desc")
        app.screen.query_one("#preset-path", Input).focus()
        await pilot.press(*list("nope.toml"), "enter")
        await pilot.pause()
        assert app.state.preset.path == custom  # a bad path changes nothing


async def test_preset_screen_saves_a_user_preset(work: Path) -> None:
    app = wizard()
    async with app.run_test(size=(80, 24)) as pilot:
        await forward(pilot, 1)
        await pilot.press("ctrl+s")
        await pilot.pause()
        await pilot.press(*list("my_7b"), "enter")
        await pilot.pause()
        saved = work.parent / "config" / "presets" / "my_7b.toml"
        assert saved.is_file()
        assert app.state.preset is not None and app.state.preset.name == "my_7b"


# -- batch ---------------------------------------------------------------------------------
@pytest.mark.parametrize("typed, inline, deepspeed", [
    ("abc", "'abc' is not a whole number", None),
    ("0", "must be 1 or more", "Train batch size: 0 has to be greater than 0"),
    ("-3", "must be 1 or more", "has to be greater than 0"),
    ("4.5", "'4.5' is not a whole number", None),
])
async def test_batch_bad_text_is_an_inline_error(typed: str, inline: str,
                                                 deepspeed: str | None) -> None:
    app = wizard()
    async with app.run_test(size=(80, 24)) as pilot:
        await to_batch(pilot)
        await clear_and_type(pilot, typed)
        await pilot.pause()
        assert inline in text_of(app, "#field-errors")
        if deepspeed:
            assert deepspeed in text_of(app, "#formula")
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.screen.step == "batch"


async def test_batch_derived_gas_floors_like_deepspeed() -> None:
    app = wizard()
    async with app.run_test(size=(80, 24)) as pilot:
        await to_batch(pilot)
        await pilot.press("ctrl+g")  # derive gradient accumulation
        assert app.state.derive == "gas"
        assert app.screen.query_one("#gas", Input).disabled
        app.screen.query_one("#global", Input).focus()
        await clear_and_type(pilot, "100")
        await pilot.pause()
        # (100 // 4) // 4 = 6, then 100 != 4 * 6 * 4: DeepSpeed's flooring, shown as is
        assert app.screen.query_one("#gas", Input).value == "6"
        assert "100 != 4 * 6 * 4" in text_of(app, "#formula")
        pairs = app.screen.query_one("#pairs", OptionList)

        def labels() -> list[str]:
            return [str(pairs.get_option_at_index(i).prompt) for i in range(pairs.option_count)]

        assert [x.strip() for x in labels()] == ["25 × 1 × 4", "5 × 5 × 4", "1 × 25 × 4"]
        await clear_and_type(pilot, "102")  # not a multiple of 4 ranks
        await pilot.pause()
        assert [x.strip() for x in labels()] == ["use global 100 (nearest below)",
                                                 "use global 104 (nearest above)"]
        pairs.focus()
        await pilot.press("end", "enter")  # nearest above
        await pilot.pause()
        assert app.state.global_text == "104"
        # a whole valid triple: the micro-batch 4 does not divide 104 / 4, so the largest
        # one below it is taken (issue 14: "nearest" is valid in every mode)
        assert "● 2 × 13 × 4" in [x.strip() for x in labels()]
        assert "104 = 2 × 13 × 4" in text_of(app, "#formula")
        pairs.focus()
        await pilot.press("home", "down", "enter")  # 26×1, then 13×2
        await pilot.pause()
        assert "104 = 13 × 2 × 4" in text_of(app, "#formula")


async def test_batch_pick_a_pair_and_tokens_per_step() -> None:
    app = wizard()
    async with app.run_test(size=(80, 24)) as pilot:
        await to_batch(pilot)
        assert "262,144" in text_of(app, "#tokens")  # 128 × 2048
        pairs = app.screen.query_one("#pairs", OptionList)
        pairs.focus()
        await pilot.press("home", "down", "enter")  # 16 × 2
        await pilot.pause()
        assert (app.state.micro_text, app.state.gas_text) == ("16", "2")
        assert "128 = 16 × 2 × 4" in text_of(app, "#formula")


async def test_back_and_next_keep_choices() -> None:
    app = wizard()
    async with app.run_test(size=(80, 24)) as pilot:
        await to_batch(pilot)
        await type_micro_gas(pilot, "2", "16")
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.screen.step == "review"
        assert '"train_micro_batch_size_per_gpu": 2' in app.screen.result.text
        for _ in range(3):
            await pilot.press("escape")
            await pilot.pause()
        assert app.screen.step == "gpus"
        for _ in range(2):
            await pilot.press("ctrl+n")
            await pilot.pause()
        assert app.screen.step == "batch"
        assert app.screen.query_one("#micro", Input).value == "2"
        assert app.screen.query_one("#gas", Input).value == "16"
        assert "128 = 2 × 16 × 4" in text_of(app, "#formula")


async def test_resize_keeps_working() -> None:
    app = wizard()
    async with app.run_test(size=(80, 24)) as pilot:
        await to_batch(pilot)
        for size in ((60, 20), (160, 50), (80, 24)):
            await pilot.resize_terminal(*size)
            await pilot.pause()
            assert app.screen.query_one("#formula").region.width > 0
        await clear_and_type(pilot, "8")
        await pilot.pause()
        assert "256 = 8 × 8 × 4" in text_of(app, "#formula")


# -- review --------------------------------------------------------------------------------
async def test_review_diff_backup_check_and_command(work: Path) -> None:
    target = work / "ds_config.json"
    old = '{\n  "train_batch_size": 16,\n  "train_micro_batch_size_per_gpu": 4\n}\n'
    target.write_text(old)
    app = wizard()
    async with app.run_test(size=(120, 40)) as pilot:
        await forward(pilot, 3)  # the review step
        diff = app.screen.query_one("#diff", Static)
        assert '-  "train_batch_size": 16,' in diff.content.code  # type: ignore[union-attr]
        command = text_of(app, "#command")
        assert ("ds-wizard --auto --num-gpus 4 --preset 7b_mamba --micro-batch 4 --grad-accum 8 "
                "--output ds_config.json") in command
        await pilot.press("ctrl+t")
        assert app.screen.query_one("#review-tabs").active == "tab-diff"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert (work / "ds_config.json.bak").read_text() == old
        assert '"train_batch_size": 128' in target.read_text()
        verdict = text_of(app, "#verdict")
        assert "check: valid" in verdict and "ds_config.json.bak" in verdict
        assert "already holds exactly this config" in str(diff.render())


async def test_review_unwritable_path_is_a_one_line_error(work: Path) -> None:
    app = wizard()
    async with app.run_test(size=(80, 24)) as pilot:
        await forward(pilot, 3)  # the review step
        app.screen.query_one("#output", Input).focus()
        await clear_and_type(pilot, "no/such/dir/x.json")
        await pilot.press("enter")  # Enter in the path field saves
        await pilot.pause()
        assert "directory" in text_of(app, "#verdict") and "✘" in text_of(app, "#verdict")
        assert not (work / "no").exists()


async def test_command_palette_offers_main_actions() -> None:
    app = wizard()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for wanted in ("Next step", "Back", "Save config", "Launch training", "Go to Batch",
                       "CPU demo run"):
            assert wanted in titles
        for landed in ("preset", "batch"):
            # a jump ahead stops at the first step not seen yet: the preset has no default
            # until its screen has shown one
            await pilot.press("ctrl+p")
            await pilot.pause()
            await pilot.press(*list("go to batch"))
            await settle(pilot)  # the palette searches in a worker
            await pilot.press("enter")
            await pilot.pause()
            assert app.screen.step == landed


async def test_palette_save_before_the_batch_step_stops_at_the_first_unseen_step() -> None:
    app = wizard()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        save = next(c for c in app.get_system_commands(app.screen) if c.title == "Save config")
        save.callback()
        await settle(pilot)
        assert app.screen.step == "preset"  # not saved behind the user's back, and no crash
        assert app.state.saved_path is None


async def test_review_saving_twice_keeps_the_first_backup(work: Path) -> None:
    target = work / "ds_config.json"
    target.write_text("{}\n")
    app = wizard()
    async with app.run_test(size=(80, 24)) as pilot:
        await forward(pilot, 3)  # the review step
        await pilot.press("ctrl+s")
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "already held this config" in text_of(app, "#verdict")
    assert (work / "ds_config.json.bak").read_text() == "{}\n"


async def test_batch_choice_does_not_follow_into_another_preset(work: Path) -> None:
    app = wizard()
    async with app.run_test(size=(80, 24)) as pilot:
        await to_batch(pilot)
        await type_micro_gas(pilot, "2", "16")
        await pilot.pause()
        assert app.state.chosen == (2, 16)
        await pilot.press("escape")
        await pilot.pause()
        table = app.screen.query_one("#preset-table", DataTable)
        table.focus()
        table.move_cursor(row=app.screen.rows.index("tiny_mamba"))
        await pilot.pause()
        assert app.state.preset is not None and app.state.preset.name == "tiny_mamba"
        assert app.state.chosen is None  # 7b_mamba's batch says nothing about tiny_mamba
        await pilot.press("ctrl+s", *list("my_tiny"), "enter")
        await pilot.pause()
    saved = read_preset_file(work.parent / "config" / "presets" / "my_tiny.toml")
    assert saved.spec.batch == load_preset("tiny_mamba").spec.batch


def test_with_batch_replaces_a_pin_or_the_base_batch() -> None:
    spec = load_preset("7b_mamba").spec
    pinned = with_batch(spec, 2, 4, 8)
    assert pinned.batch.by_world_size["2"].micro_batch == 4
    assert pinned.batch.by_world_size["2"].global_batch == 64
    assert (pinned.batch.global_batch, pinned.batch.micro_batch) == (128, 4)
    base = with_batch(spec, 8, 2, 4)
    assert (base.batch.global_batch, base.batch.micro_batch) == (64, 2)
    assert base.batch.by_world_size == spec.batch.by_world_size
    choice = choose_batch(base, 8)
    assert (choice.micro_batch, choice.grad_accum) == (2, 4)


async def test_jump_after_a_gpu_change_stops_at_the_batch_step() -> None:
    app = wizard()
    async with app.run_test(size=(80, 24)) as pilot:
        await to_batch(pilot)
        await type_micro_gas(pilot, "2", "16")
        await pilot.press("escape", "escape")
        await pilot.pause()
        app.screen.query_one("#nodes", Input).focus()
        await clear_and_type(pilot, "2")  # 4 → 8 GPUs: the batch was chosen for 4
        await pilot.pause()
        app.action_goto("review")
        await settle(pilot)
        assert app.screen.step == "batch"
        assert "128 = 4 × 4 × 8" in text_of(app, "#formula")  # the preset's choice for 8


async def test_review_tracker_choice_writes_deepspeeds_monitor_keys(work: Path) -> None:
    """Issue 22: the review step's tracker choice is `--auto --monitor` (the same door)."""
    from textual.widgets import Select

    app = wizard(gpu_probe(4))
    async with app.run_test(size=(120, 40)) as pilot:
        await to_batch(pilot)
        await pilot.press("ctrl+n")
        await pilot.pause()
        app.screen.query_one("#trackers", Select).value = "tensorboard,csv"
        await wait_for(pilot, lambda: '"csv_monitor"' in str(
            app.screen.query_one("#json", Static).content.code))  # type: ignore[union-attr]
        assert "--monitor tensorboard,csv" in text_of(app, "#command")
        await pilot.press("ctrl+s")
        await pilot.pause()
    saved = json.loads((work / "ds_config.json").read_text())
    assert saved["tensorboard"] == {"enabled": True, "output_path": "", "job_name": "ds-wizard"}
    assert saved["csv_monitor"]["enabled"] is True and "wandb" not in saved
    cli = auto_cli(work / "cli.json", "--num-gpus", "4", "--preset", "7b_mamba",
                   "--micro-batch", str(saved["train_micro_batch_size_per_gpu"]),
                   "--grad-accum", str(saved["gradient_accumulation_steps"]),
                   "--monitor", "tensorboard,csv")
    assert cli.returncode == 0, cli.stderr
    assert json.loads((work / "cli.json").read_text()) == saved
