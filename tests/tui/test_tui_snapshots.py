"""SVG snapshots of every step at 80×24 and 120×40 (fake GPUs, no cursor blink).

Regenerate with ``pytest tests/tui/test_tui_snapshots.py --snapshot-update`` and look at the
images before committing them.
"""

from __future__ import annotations

from functools import partial

import pytest
from fakes import no_gpus, script_job_factory, wait_for
from tui_pilot import forward, open_runs, save_config, settle, to_launch, wizard

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]


@pytest.mark.parametrize("size", SIZES)
def test_gpus(snap_compare, work, size) -> None:
    assert snap_compare(wizard(), terminal_size=size, run_before=settle)


@pytest.mark.parametrize("size", SIZES)
def test_gpus_none_found(snap_compare, work, size) -> None:
    assert snap_compare(wizard(no_gpus), terminal_size=size, run_before=settle)


@pytest.mark.parametrize("size", SIZES)
def test_preset(snap_compare, work, size) -> None:
    assert snap_compare(wizard(), terminal_size=size, run_before=partial(forward, steps=1))


@pytest.mark.parametrize("size", SIZES)
def test_batch_valid(snap_compare, work, size) -> None:
    assert snap_compare(wizard(), terminal_size=size, run_before=partial(forward, steps=2))


@pytest.mark.parametrize("size", SIZES)
def test_batch_deepspeed_error(snap_compare, work, size) -> None:
    async def run_before(pilot) -> None:
        await forward(pilot, 2)
        await pilot.press("ctrl+g", "ctrl+g", "ctrl+g", "tab", "tab", "end", "ctrl+u", "1", "6")
        await pilot.pause()

    assert snap_compare(wizard(), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_review_saved(snap_compare, work, size) -> None:
    async def run_before(pilot) -> None:
        await forward(pilot, 3)
        await save_config(pilot)
        await pilot.pause()

    assert snap_compare(wizard(), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_launch_ready(snap_compare, work, size) -> None:
    assert snap_compare(wizard(), terminal_size=size, run_before=to_launch)


@pytest.mark.parametrize("size", SIZES)
def test_launch_after_fake_run(snap_compare, work, size, monkeypatch) -> None:
    # the status clock is wall time (never below the trainer's elapsed_s): stopped here,
    # it shows the fake trainer's deterministic elapsed_s
    monkeypatch.setattr("ds_wizard.screens.launch.monotonic", lambda: 1000.0)
    factory = script_job_factory(work, steps=12)

    async def run_before(pilot) -> None:
        await to_launch(pilot)
        await pilot.press("ctrl+l")
        screen = pilot.app.screen
        await wait_for(pilot, lambda: factory.jobs and not screen.running)
        await pilot.pause()

    assert snap_compare(wizard(job_factory=factory), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_launch_confirm_stop(snap_compare, work, size, monkeypatch) -> None:
    """The stop question over a running (fake) job that has logged 3 steps and waits."""
    monkeypatch.setattr("ds_wizard.screens.launch.monotonic", lambda: 1000.0)
    factory = script_job_factory(work, steps=3, hold=True)

    async def run_before(pilot) -> None:
        await to_launch(pilot)
        await pilot.press("ctrl+l")
        screen = pilot.app.screen
        await wait_for(pilot, lambda: factory.jobs and len(screen._losses) >= 3)
        await pilot.pause(0.3)
        await pilot.press("ctrl+t")
        await pilot.pause()

    try:
        assert snap_compare(wizard(job_factory=factory), terminal_size=size,
                            run_before=run_before)
    finally:
        for job in factory.jobs:
            job.stop()


@pytest.mark.parametrize("size", SIZES)
def test_gpus_planning_for_another_machine(snap_compare, work, size) -> None:
    """No GPU here and 4 typed: the step bar and the summary say the plan is for elsewhere."""

    async def run_before(pilot) -> None:
        await settle(pilot)
        await pilot.press("end", "ctrl+u", "4")
        await pilot.pause()

    assert snap_compare(wizard(no_gpus), terminal_size=size, run_before=run_before)
@pytest.mark.parametrize("size", SIZES)
def test_runs_overlay(snap_compare, work, fake_runs, size) -> None:
    """The Runs screen with two runs' loss curves overlaid."""

    async def run_before(pilot) -> None:
        await open_runs(pilot)
        await pilot.press("space", "down", "space")
        chart = pilot.app.screen.query_one("#runs-chart")
        await wait_for(pilot, lambda: len(chart.series) == 2)
        await pilot.pause()

    assert snap_compare(wizard(runs_api=fake_runs, cwd=work),
                        terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_quit_question(snap_compare, work, fake_runs, size) -> None:
    """Quitting while the launch step follows a run (attached from the Runs screen)."""

    async def run_before(pilot) -> None:
        await open_runs(pilot)
        await pilot.press("a")  # the cursor starts on the running run
        await wait_for(pilot, lambda: pilot.app.job_running
                       and len(pilot.app.screen._losses) == 8)
        await pilot.pause(0.3)
        await pilot.press("ctrl+q")
        await pilot.pause()

    assert snap_compare(wizard(runs_api=fake_runs, cwd=work),
                        terminal_size=size, run_before=run_before)


def test_batch_measured(snap_compare, work) -> None:
    """After Measure (a stand-in for the short runs): the fields hold the choice, the
    splits that ran are marked with their tokens/s or their verdict."""
    from test_tui_tune import StandIn

    async def run_before(pilot) -> None:
        await settle(pilot)
        await pilot.press("ctrl+t")  # the CPU demo
        await forward(pilot, 2)
        screen = pilot.app.screen
        screen.measure_runner = StandIn()
        await pilot.press("ctrl+t")

        def shown(selector: str) -> str:
            return str(screen.query_one(selector).render())
        # the Measure worker, then the memory fit it starts, each on its own thread
        await wait_for(pilot, lambda: "fastest that fits" in shown("#measure"))
        await wait_for(pilot, lambda: "rank:" in shown("#memory")
                       and "—" not in shown("#memory"))
        await settle(pilot)
        await pilot.pause()

    assert snap_compare(wizard(no_gpus), terminal_size=(80, 24), run_before=run_before)


def test_batch_other_machine_gpu_picked(snap_compare, work) -> None:
    """Planning 4 GPUs elsewhere with an H100 80GB picked: the memory is a fit verdict."""

    async def run_before(pilot) -> None:
        await settle(pilot)
        await pilot.press("end", "ctrl+u", "4")
        await pilot.pause()
        pilot.app.screen.query_one("#other-gpu").value = "NVIDIA H100 80GB HBM3"
        await forward(pilot, 2)
        await settle(pilot)
        memory = pilot.app.screen.query_one("#memory")
        await wait_for(pilot, lambda: "GiB" in str(memory.render()))
        await pilot.pause()

    assert snap_compare(wizard(no_gpus), terminal_size=(80, 24), run_before=run_before)
