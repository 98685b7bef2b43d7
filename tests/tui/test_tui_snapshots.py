"""SVG snapshots of every step at 80×24 and 120×40 (fake GPUs, no cursor blink).

Regenerate with ``pytest tests/test_tui_snapshots.py --snapshot-update`` and look at the
images before committing them.
"""

from __future__ import annotations

from functools import partial

import pytest
from fakes import gpu_probe, no_gpus, script_job_factory, wait_for

from ds_wizard.app import make_app

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]


async def _settle(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def _forward(pilot, steps: int) -> None:
    await _settle(pilot)
    for _ in range(steps):
        await pilot.press("ctrl+n")
        await pilot.pause()


async def _to_launch(pilot) -> None:
    """Forward to the launch step, saving the config on the review step on the way."""
    await _forward(pilot, 3)
    await pilot.press("ctrl+s")
    await pilot.pause()
    pilot.app.clear_notifications()
    await pilot.press("ctrl+n")
    await pilot.pause()


def _app(**kw):
    return make_app(kw.pop("probe", gpu_probe(4)), cursor_blink=False, **kw)


@pytest.mark.parametrize("size", SIZES)
def test_gpus(snap_compare, work, size) -> None:
    assert snap_compare(_app(), terminal_size=size, run_before=_settle)


@pytest.mark.parametrize("size", SIZES)
def test_gpus_none_found(snap_compare, work, size) -> None:
    assert snap_compare(_app(probe=no_gpus), terminal_size=size, run_before=_settle)


@pytest.mark.parametrize("size", SIZES)
def test_preset(snap_compare, work, size) -> None:
    assert snap_compare(_app(), terminal_size=size, run_before=partial(_forward, steps=1))


@pytest.mark.parametrize("size", SIZES)
def test_batch_valid(snap_compare, work, size) -> None:
    assert snap_compare(_app(), terminal_size=size, run_before=partial(_forward, steps=2))


@pytest.mark.parametrize("size", SIZES)
def test_batch_deepspeed_error(snap_compare, work, size) -> None:
    async def run_before(pilot) -> None:
        await _forward(pilot, 2)
        await pilot.press("ctrl+g", "ctrl+g", "ctrl+g", "tab", "tab", "end", "ctrl+u", "1", "6")
        await pilot.pause()

    assert snap_compare(_app(), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_review_saved(snap_compare, work, size) -> None:
    async def run_before(pilot) -> None:
        await _forward(pilot, 3)
        await pilot.press("ctrl+s")
        await pilot.pause()
        pilot.app.clear_notifications()
        await pilot.pause()

    assert snap_compare(_app(), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_launch_ready(snap_compare, work, size) -> None:
    assert snap_compare(_app(), terminal_size=size, run_before=_to_launch)


@pytest.mark.parametrize("size", SIZES)
def test_launch_after_fake_run(snap_compare, work, size, monkeypatch) -> None:
    # the status clock is wall time (never below the trainer's elapsed_s): stopped here,
    # it shows the fake trainer's deterministic elapsed_s
    monkeypatch.setattr("ds_wizard.screens.launch.monotonic", lambda: 1000.0)
    factory = script_job_factory(work, steps=12)

    async def run_before(pilot) -> None:
        await _to_launch(pilot)
        await pilot.press("ctrl+l")
        screen = pilot.app.screen
        await wait_for(pilot, lambda: factory.jobs and not screen.running)
        await pilot.pause()

    assert snap_compare(_app(job_factory=factory), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_launch_confirm_stop(snap_compare, work, size, monkeypatch) -> None:
    """The stop question over a running (fake) job that has logged 3 steps and waits."""
    monkeypatch.setattr("ds_wizard.screens.launch.monotonic", lambda: 1000.0)
    factory = script_job_factory(work, steps=3, hold=True)

    async def run_before(pilot) -> None:
        await _to_launch(pilot)
        await pilot.press("ctrl+l")
        screen = pilot.app.screen
        await wait_for(pilot, lambda: factory.jobs and len(screen._losses) >= 3)
        await pilot.pause(0.3)
        await pilot.press("ctrl+t")
        await pilot.pause()

    try:
        assert snap_compare(_app(job_factory=factory), terminal_size=size,
                            run_before=run_before)
    finally:
        for job in factory.jobs:
            job.stop()


@pytest.mark.parametrize("size", SIZES)
def test_gpus_planning_for_another_machine(snap_compare, work, size) -> None:
    """No GPU here and 4 typed: the step bar and the summary say the plan is for elsewhere."""

    async def run_before(pilot) -> None:
        await _settle(pilot)
        await pilot.press("end", "ctrl+u", "4")
        await pilot.pause()

    assert snap_compare(_app(probe=no_gpus), terminal_size=size, run_before=run_before)
