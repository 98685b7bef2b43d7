"""The Runs screen (list, attach, stop, resume, overlaid loss curves) and the quit question.

The runs come from a fake runs door passed to ``make_app`` (the same door the real
``LauncherRuns`` goes through); the followed jobs are fakes without processes. ``app``
(below) is the wizard over that door, ``fake_runs`` (conftest.py) the door itself.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from fakes import wait_for
from textual.widgets import DataTable, Log
from tui_pilot import FakeRuns, cursor_to, open_runs, wizard

from ds_wizard.app import WizardApp
from ds_wizard.core.runs.runstate import RunStatus
from ds_wizard.screens.chart import LossChart
from ds_wizard.screens.dialogs import ConfirmScreen, QuitScreen
from ds_wizard.screens.launch import LaunchScreen
from ds_wizard.screens.runs import RunsScreen

pytestmark = [pytest.mark.anyio]


@pytest.fixture
def app(work: Path, fake_runs: FakeRuns) -> WizardApp:
    return wizard(runs_api=fake_runs, cwd=work)


def rows_of(screen: RunsScreen) -> dict[str, list[str]]:
    table = screen.query_one("#runs-table", DataTable)
    return {row.key.value: [str(c) for c in table.get_row(row.key)]
            for row in table.ordered_rows}


async def test_runs_screen_lists_runs_with_live_status(app: WizardApp, fake_runs: FakeRuns) -> None:
    async with app.run_test(size=(100, 30)) as pilot:
        await app.workers.wait_for_complete()
        app.screen.query_one("#nodes").focus()  # ^e works in a text field too
        await pilot.pause()
        screen = await open_runs(pilot)  # from the first step
        rows = rows_of(screen)
        assert list(rows) == ["tiny_mamba-c", "tiny_mamba-b", "tiny_mamba-a"]  # newest first
        assert rows["tiny_mamba-c"][3:6] == ["running", "8/100", "0.6250"]
        assert rows["tiny_mamba-a"][3] == "finished"
        fake_runs.set_status("tiny_mamba-c", RunStatus.LOST)
        await wait_for(pilot, lambda: rows_of(screen)["tiny_mamba-c"][3] == "supervisor lost")
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen.step == "gpus"
        assert any(c.title == "Runs" for c in app.get_system_commands(app.screen))
    assert any(b.id == "runs" and b.key == "ctrl+e" for b in app.BINDINGS)


async def test_chart_overlays_the_marked_runs(app: WizardApp) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_runs(pilot)
        chart = screen.query_one("#runs-chart", LossChart)
        await wait_for(pilot, lambda: list(chart.series) == ["tiny_mamba-c"])  # the cursor's
        await pilot.press("space")  # mark c
        await cursor_to(pilot, screen, "tiny_mamba-a")
        await pilot.press("space")  # mark a
        await wait_for(pilot, lambda: set(chart.series) == {"tiny_mamba-a", "tiny_mamba-c"})
        assert [s for s, _ in chart.series["tiny_mamba-a"]] == list(range(1, 21))
        assert chart.series["tiny_mamba-c"][0] == (1, 6.0)
        assert rows_of(screen)["tiny_mamba-a"][0] == "●"
        await pilot.press("space")  # unmark a
        await wait_for(pilot, lambda: list(chart.series) == ["tiny_mamba-c"])


async def test_attach_follows_the_run_on_the_launch_step(app: WizardApp,
                                                         fake_runs: FakeRuns) -> None:
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_runs(pilot)
        await cursor_to(pilot, screen, "tiny_mamba-a")
        await pilot.press("a")  # finished: nothing to attach to
        await pilot.pause()
        assert fake_runs.calls == [] and isinstance(app.screen, RunsScreen)
        await cursor_to(pilot, screen, "tiny_mamba-c")
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen))
        launch = app.screen
        assert fake_runs.calls == [("attach", "tiny_mamba-c")]
        await wait_for(pilot, lambda: "[fake] following tiny_mamba-c"
                       in launch.query_one("#log", Log).lines)
        chart = launch.query_one("#loss-plot", LossChart)
        await wait_for(pilot, lambda: len(chart.series.get("tiny_mamba-c", [])) == 8)
        fake_runs.jobs[0].leave()
        await wait_for(pilot, lambda: not launch.running)


async def test_stop_asks_then_stops_the_run(app: WizardApp, fake_runs: FakeRuns) -> None:
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_runs(pilot)
        await cursor_to(pilot, screen, "tiny_mamba-c")
        await pilot.press("s")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause()
        assert fake_runs.calls == []
        await pilot.press("s")
        await pilot.pause()
        await pilot.press("y")
        await wait_for(pilot, lambda: rows_of(screen)["tiny_mamba-c"][3] == "stopped")
        assert fake_runs.calls == [("stop", "tiny_mamba-c")]


async def test_resume_a_stopped_run_and_follow_it(app: WizardApp, fake_runs: FakeRuns) -> None:
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_runs(pilot)
        for name in ("tiny_mamba-a", "tiny_mamba-c"):  # finished, running: refused
            await cursor_to(pilot, screen, name)
            await pilot.press("r")
            await pilot.pause()
        assert fake_runs.calls == []
        await cursor_to(pilot, screen, "tiny_mamba-b")
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen))
        assert fake_runs.calls == [("resume", "tiny_mamba-b")]
        assert app.job_running
        fake_runs.jobs[0].leave()
        await wait_for(pilot, lambda: not app.job_running)


@pytest.mark.parametrize(("key", "left"), [
    pytest.param("enter", True, id="leave-it-running-by-default"),
    pytest.param("s", False, id="stop-it"),
])
async def test_quit_during_a_run(app: WizardApp, fake_runs: FakeRuns, key: str, left: bool) -> None:
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_runs(pilot)
        await cursor_to(pilot, screen, "tiny_mamba-c")
        await pilot.press("a")
        await wait_for(pilot, lambda: app.job_running)
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert isinstance(app.screen, QuitScreen)
        await pilot.press(key)  # Enter: the focused default, leave it running
        await wait_for(pilot, lambda: not app.is_running)
    job = fake_runs.jobs[0]
    assert (job.left, job.stopped) == (left, not left)


def test_the_real_runs_door_lists_and_refuses_plainly(work: Path) -> None:
    """LauncherRuns over a prepared (never started) run: listed; stop and resume refused
    with one line each."""
    from ds_wizard.core.base.errors import DsWizardError
    from ds_wizard.core.runs.runspec import Accelerator
    from ds_wizard.launch.plan import LaunchRequest, prepare_run
    from ds_wizard.screens.jobs import LauncherRuns

    plan = prepare_run(LaunchRequest("tiny_mamba", runs_dir=work / "runs", steps=4,
                                     accelerator=Accelerator("cpu", 0, "test")))
    door = LauncherRuns()
    (row,) = door.summaries(work / "runs")
    assert row.name == plan.paths.root.name and row.preset == "tiny_mamba"
    assert not row.alive and not row.resumable
    with pytest.raises(DsWizardError, match="is not running"):
        door.stop(plan.paths.root)
    with pytest.raises(DsWizardError, match="no complete checkpoint"):
        door.resume(plan.paths.root)


async def test_a_stalled_run_shows_where_it_hangs_and_its_autopsy(
        work: Path, app: WizardApp, fake_runs: FakeRuns) -> None:
    """Issue 22: the supervisor's stall verdict (state.json, through the runs door) is in
    the table's status and, with the autopsy's summary, under it."""
    fake = fake_runs
    autopsy = work / "runs" / "tiny_mamba-c" / "stalls" / "20261208-011854"
    line = ("stalled for 4m: rank 1 last in backward at step 8; odd one out: rank 1 "
            "(its process is stopped: it cannot reach the collective the others wait in)")
    fake.rows = [replace(r, status=RunStatus.STALLED, stall=line,
                         stall_detail={"autopsy": str(autopsy), "rank": 1})
                 if r.name == "tiny_mamba-c" else r for r in fake.rows]
    async with app.run_test(size=(120, 34)) as pilot:
        screen = await open_runs(pilot)
        assert rows_of(screen)["tiny_mamba-c"][3] == "stalled"
        await cursor_to(pilot, screen, "tiny_mamba-c")
        detail = str(screen.query_one("#runs-detail").render())
        assert line in detail.replace("\n", " ") or line in detail
        assert "stalls/20261208-011854" in detail
        fake.set_status("tiny_mamba-c", RunStatus.RUNNING)  # the rank came back
        fake.rows = [replace(r, stall=None) for r in fake.rows]
        await wait_for(pilot, lambda: rows_of(screen)["tiny_mamba-c"][3] == "running")
        await wait_for(pilot, lambda: "stalled for" not in
                       str(screen.query_one("#runs-detail").render()))
