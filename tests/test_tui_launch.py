"""The launch step: live log, metrics status, loss plot, stop, quit, failure — no orphans."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from test_tui_fakes import fake_gpus, isolate, no_gpus, pid_alive, script_job_factory, wait_for
from textual.widgets import Log, Static

from ds_wizard.app import make_app
from ds_wizard.screens.chart import LossChart
from ds_wizard.screens.dialogs import ConfirmScreen, QuitScreen

pytestmark = [pytest.mark.anyio]


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate(tmp_path, monkeypatch)


def text_of(app, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def to_launch(pilot, save: bool = False) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    for _ in range(3):
        await pilot.press("ctrl+n")
        await pilot.pause()
    if save:
        await pilot.press("ctrl+s")
        await pilot.pause()
    await pilot.press("ctrl+n")
    await pilot.pause()
    assert pilot.app.screen.step == "launch"


@contextlib.asynccontextmanager
async def started(work: Path, **job):
    """A wizard at the launch step that has just started a scripted job."""
    factory = script_job_factory(work, **job)
    app = make_app(fake_gpus(4), job_factory=factory, cursor_blink=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await to_launch(pilot)
        await pilot.press("ctrl+l")
        yield app, pilot, factory


async def test_fake_job_streams_log_metrics_and_plot(work: Path) -> None:
    async with started(work, steps=6) as (app, pilot, factory):
        screen = app.screen
        await wait_for(pilot, lambda: not screen.running and factory.jobs)
        log = screen.query_one("#log", Log)
        assert "[fake] starting" in log.lines
        assert "step 6 loss 0.8333" in log.lines
        status = text_of(app, "#launch-status")
        assert "step 6" in status and "loss 0.8333" in status and "6,000 tok/s" in status
        assert "00:06" in status  # elapsed_s from metrics.jsonl
        chart = screen.query_one("#loss-plot", LossChart)
        (series,) = chart.series.values()
        assert [s for s, _ in series] == [1, 2, 3, 4, 5, 6]
        assert "finished (exit code 0)" in text_of(app, "#launch-result")
        assert not pid_alive(factory.jobs[0].pid)


async def test_failed_job_shows_exit_code_and_last_lines(work: Path) -> None:
    async with started(work, steps=2, fail=True) as (app, pilot, factory):
        await wait_for(pilot, lambda: not app.screen.running and factory.jobs)
        result = app.screen.query_one("#launch-result", Static)
        assert "failed with exit code 3" in str(result.render())
        assert "RuntimeError: CUDA out of memory (fake)" in str(result.render())
        assert result.has_class("error")


async def test_stop_asks_then_stops_the_process_group(work: Path) -> None:
    async with started(work, steps=400) as (app, pilot, factory):
        launch = app.screen
        await wait_for(pilot, lambda: launch._losses)
        pid = factory.jobs[0].pid
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")  # changed my mind: it keeps running
        await pilot.pause()
        assert launch.running and pid_alive(pid)
        await pilot.press("ctrl+t")
        await pilot.pause()
        await pilot.press("y")
        await wait_for(pilot, lambda: not launch.running)
        assert "stopped" in text_of(app, "#launch-result")
        assert "[fake] stop requested: checkpoint saved" in launch.query_one("#log", Log).lines
        assert not pid_alive(pid)
        assert factory.jobs[0].pids() == []


async def test_quit_while_running_asks_and_stops(work: Path) -> None:
    async with started(work, steps=400) as (app, pilot, factory):
        await wait_for(pilot, lambda: factory.jobs and app.screen._losses)
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert isinstance(app.screen, QuitScreen)
        assert app.screen.focused is not None and app.screen.focused.id == "leave"
        await pilot.press("escape")  # neither: stay
        await pilot.pause()
        assert app.is_running and app.job_running
        await pilot.press("escape")  # Back is refused while the job runs
        await pilot.pause()
        assert app.screen.step == "launch"
        await pilot.press("ctrl+q")
        await pilot.pause()
        await pilot.press("s")
        await wait_for(pilot, lambda: not app.is_running, timeout=30)
    assert not pid_alive(factory.jobs[0].pid)


async def test_launch_refused_without_saved_config(work: Path) -> None:
    app = make_app(fake_gpus(4), cursor_blink=False)  # the real launcher
    async with app.run_test(size=(80, 24)) as pilot:
        await to_launch(pilot)
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: not app.screen.running)
        result = text_of(app, "#launch-result")
        assert "could not start: the config is not saved yet" in result


@pytest.mark.slow
async def test_real_tiny_mamba_cpu_run_then_stop(work: Path) -> None:
    """The CPU demo through the real deepspeed launcher: log lines, a loss, a clean stop."""
    app = make_app(no_gpus, cursor_blink=False, steps=200)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("ctrl+t")  # CPU demo: tiny_mamba on 2 CPU ranks
        await to_launch(pilot, save=True)
        assert app.state.saved_path is not None
        await pilot.press("ctrl+l")
        launch = app.screen
        # the first run on a machine JIT-builds DeepSpeed's CPU comm op (about 2 minutes)
        await wait_for(pilot, lambda: launch._losses or not launch.running, timeout=420)
        assert launch.running, "\n".join(launch.query_one("#log", Log).lines[-20:])
        lines = launch.query_one("#log", Log).lines
        assert any("loss" in line for line in lines)
        assert "loss " in text_of(app, "#launch-status")
        job = launch.job
        assert job is not None
        pids = job.pids()
        assert len(pids) >= 3  # the launcher and two ranks at least
        await pilot.press("ctrl+t")
        await pilot.pause()
        await pilot.press("y")
        await wait_for(pilot, lambda: not launch.running, timeout=120)
        assert "stopped" in text_of(app, "#launch-result")
    assert [p for p in pids if pid_alive(p)] == []
