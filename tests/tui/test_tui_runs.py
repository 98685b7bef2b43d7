"""The Runs screen (list, attach, stop, resume, overlaid loss curves) and the quit question.

The runs come from a fake runs door passed to ``make_app`` (the same door the real
``LauncherRuns`` goes through); the followed jobs are fakes without processes.
"""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from fakes import gpu_probe, isolate, wait_for
from textual.widgets import DataTable, Log

from ds_wizard.app import make_app
from ds_wizard.core.runs.runstate import RunStatus, RunSummary
from ds_wizard.screens.chart import LossChart
from ds_wizard.screens.dialogs import ConfirmScreen, QuitScreen
from ds_wizard.screens.launch import LaunchScreen
from ds_wizard.screens.runs import RunsScreen

pytestmark = [pytest.mark.anyio]


class FollowJob:
    """A run followed by the launch step: lines until stopped or left."""

    outlives_client = True

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.pid = 0
        self.command = f"follow {run_dir.name}"
        self._end = threading.Event()
        self.left = self.stopped = False

    def lines(self):
        yield f"[fake] following {self.run_dir.name}"
        self._end.wait(60)

    def stop(self) -> int:
        self.stopped = True
        self._end.set()
        return 0

    def leave(self) -> None:
        self.left = True
        self._end.set()

    def wait(self) -> int:
        self._end.wait(60)
        return -1 if self.left else 0


def summary(run_dir: Path, status: RunStatus, step: int, total: int = 100,
            ckpt: int | None = None) -> RunSummary:
    return RunSummary(
        name=run_dir.name, run_dir=run_dir, preset="tiny_mamba", status=status, step=step,
        total_steps=total, loss=5.0 / step, tokens_per_s=1234.0,
        started="2026-11-29T10:00:00", ended=None, exit_code=None, stop_reason=None,
        stopping=False, supervisor_pid=1 if status == RunStatus.RUNNING else None,
        supervisor_alive=status == RunStatus.RUNNING, pgid=None,
        pids=(1,) if status == RunStatus.RUNNING else (), checkpoint_step=ckpt)


class FakeRuns:
    def __init__(self, runs_dir: Path) -> None:
        self.rows: list[RunSummary] = []
        self.calls: list[tuple[str, str]] = []
        self.jobs: list[FollowJob] = []
        for name, status, steps, ckpt in (("tiny_mamba-a", RunStatus.FINISHED, 20, 20),
                                          ("tiny_mamba-b", RunStatus.STOPPED, 12, 10),
                                          ("tiny_mamba-c", RunStatus.RUNNING, 8, None)):
            run_dir = runs_dir / name
            run_dir.mkdir(parents=True)
            offset = {"tiny_mamba-a": 0.0, "tiny_mamba-b": 0.5, "tiny_mamba-c": 1.0}[name]
            (run_dir / "metrics.jsonl").write_text("".join(
                json.dumps({"step": s, "loss": 5.0 / s + offset}) + "\n"
                for s in range(1, steps + 1)))
            self.rows.append(summary(run_dir, status, steps, ckpt=ckpt))

    def summaries(self, runs_dir: Path) -> list[RunSummary]:
        return list(self.rows)

    def _follow(self, run_dir: Path) -> FollowJob:
        job = FollowJob(run_dir)
        self.jobs.append(job)
        return job

    def attach(self, run_dir: Path) -> FollowJob:
        self.calls.append(("attach", run_dir.name))
        return self._follow(run_dir)

    def stop(self, run_dir: Path) -> str:
        self.calls.append(("stop", run_dir.name))
        self.set_status(run_dir.name, RunStatus.STOPPED)
        return "stopped on request"

    def resume(self, run_dir: Path) -> FollowJob:
        self.calls.append(("resume", run_dir.name))
        self.set_status(run_dir.name, RunStatus.RUNNING)
        return self._follow(run_dir)

    def set_status(self, name: str, status: RunStatus) -> None:
        self.rows = [replace(r, status=status, pids=(1,) if status == RunStatus.RUNNING
                             else ()) if r.name == name else r for r in self.rows]


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate(tmp_path, monkeypatch)


def app_with_runs(work: Path) -> tuple[object, FakeRuns]:
    fake = FakeRuns(work / "runs")
    return make_app(gpu_probe(4), cursor_blink=False, runs_api=fake, cwd=work), fake


def rows_of(screen: RunsScreen) -> dict[str, list[str]]:
    table = screen.query_one("#runs-table", DataTable)
    return {row.key.value: [str(c) for c in table.get_row(row.key)]
            for row in table.ordered_rows}


async def open_runs(pilot) -> RunsScreen:
    await pilot.app.workers.wait_for_complete()
    await pilot.press("ctrl+e")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, RunsScreen)
                   and pilot.app.screen.summaries)
    await pilot.pause()
    return pilot.app.screen


async def cursor_to(pilot, screen: RunsScreen, name: str) -> None:
    table = screen.query_one("#runs-table", DataTable)
    table.move_cursor(row=table.get_row_index(name))
    await pilot.pause()
    assert screen.current is not None and screen.current.name == name


async def test_runs_screen_lists_runs_with_live_status(work: Path) -> None:
    app, fake = app_with_runs(work)
    async with app.run_test(size=(100, 30)) as pilot:
        await app.workers.wait_for_complete()
        app.screen.query_one("#nodes").focus()  # ^e works in a text field too
        await pilot.pause()
        screen = await open_runs(pilot)  # from the first step
        rows = rows_of(screen)
        assert list(rows) == ["tiny_mamba-c", "tiny_mamba-b", "tiny_mamba-a"]  # newest first
        assert rows["tiny_mamba-c"][3:6] == ["running", "8/100", "0.6250"]
        assert rows["tiny_mamba-a"][3] == "finished"
        fake.set_status("tiny_mamba-c", RunStatus.LOST)
        await wait_for(pilot, lambda: rows_of(screen)["tiny_mamba-c"][3] == "supervisor lost")
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen.step == "gpus"
        assert any(c.title == "Runs" for c in app.get_system_commands(app.screen))
    assert any(b.id == "runs" and b.key == "ctrl+e" for b in app.BINDINGS)


async def test_chart_overlays_the_marked_runs(work: Path) -> None:
    app, _ = app_with_runs(work)
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


async def test_attach_follows_the_run_on_the_launch_step(work: Path) -> None:
    app, fake = app_with_runs(work)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_runs(pilot)
        await cursor_to(pilot, screen, "tiny_mamba-a")
        await pilot.press("a")  # finished: nothing to attach to
        await pilot.pause()
        assert fake.calls == [] and isinstance(app.screen, RunsScreen)
        await cursor_to(pilot, screen, "tiny_mamba-c")
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen))
        launch = app.screen
        assert fake.calls == [("attach", "tiny_mamba-c")]
        await wait_for(pilot, lambda: "[fake] following tiny_mamba-c"
                       in launch.query_one("#log", Log).lines)
        chart = launch.query_one("#loss-plot", LossChart)
        await wait_for(pilot, lambda: len(chart.series.get("tiny_mamba-c", [])) == 8)
        fake.jobs[0].leave()
        await wait_for(pilot, lambda: not launch.running)


async def test_stop_asks_then_stops_the_run(work: Path) -> None:
    app, fake = app_with_runs(work)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_runs(pilot)
        await cursor_to(pilot, screen, "tiny_mamba-c")
        await pilot.press("s")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause()
        assert fake.calls == []
        await pilot.press("s")
        await pilot.pause()
        await pilot.press("y")
        await wait_for(pilot, lambda: rows_of(screen)["tiny_mamba-c"][3] == "stopped")
        assert fake.calls == [("stop", "tiny_mamba-c")]


async def test_resume_a_stopped_run_and_follow_it(work: Path) -> None:
    app, fake = app_with_runs(work)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_runs(pilot)
        for name in ("tiny_mamba-a", "tiny_mamba-c"):  # finished, running: refused
            await cursor_to(pilot, screen, name)
            await pilot.press("r")
            await pilot.pause()
        assert fake.calls == []
        await cursor_to(pilot, screen, "tiny_mamba-b")
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen))
        assert fake.calls == [("resume", "tiny_mamba-b")]
        assert app.job_running
        fake.jobs[0].leave()
        await wait_for(pilot, lambda: not app.job_running)


async def test_quit_during_a_run_leaves_it_running_by_default(work: Path) -> None:
    app, fake = app_with_runs(work)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_runs(pilot)
        await cursor_to(pilot, screen, "tiny_mamba-c")
        await pilot.press("a")
        await wait_for(pilot, lambda: app.job_running)
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert isinstance(app.screen, QuitScreen)
        await pilot.press("enter")  # the focused default: leave it running
        await wait_for(pilot, lambda: not app.is_running)
    job = fake.jobs[0]
    assert job.left and not job.stopped


async def test_quit_during_a_run_can_stop_it(work: Path) -> None:
    app, fake = app_with_runs(work)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_runs(pilot)
        await cursor_to(pilot, screen, "tiny_mamba-c")
        await pilot.press("a")
        await wait_for(pilot, lambda: app.job_running)
        await pilot.press("ctrl+q")
        await pilot.pause()
        await pilot.press("s")
        await wait_for(pilot, lambda: not app.is_running)
    job = fake.jobs[0]
    assert job.stopped and not job.left


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


async def test_a_stalled_run_shows_where_it_hangs_and_its_autopsy(work: Path) -> None:
    """Issue 22: the supervisor's stall verdict (state.json, through the runs door) is in
    the table's status and, with the autopsy's summary, under it."""
    app, fake = app_with_runs(work)
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
