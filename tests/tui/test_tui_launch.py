"""The launch step: live log, metrics status, loss plot, stop, quit, failure — no orphans."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from fakes import no_gpus, script_job_factory, wait_for
from textual.widgets import Log, Static
from tui_pilot import forward, text_of, to_launch, wizard

from ds_wizard.core.base.system import pid_alive
from ds_wizard.screens.chart import LossChart
from ds_wizard.screens.dialogs import ConfirmScreen, QuitScreen

pytestmark = [pytest.mark.anyio]


@contextlib.asynccontextmanager
async def started(work: Path, **job):
    """A wizard at the launch step that has just started a scripted job."""
    factory = script_job_factory(work, **job)
    app = wizard(job_factory=factory)
    async with app.run_test(size=(80, 24)) as pilot:
        await to_launch(pilot, save=False)
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
        # wall time since ^l, never below the trainer's elapsed_s (6 s in the fake
        # metrics, more than the wall time here): the clock only moves forward
        assert status.endswith("00:06"), status
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


async def test_review_next_asks_to_save_first(work: Path) -> None:
    app = wizard()  # the real launcher
    async with app.run_test(size=(80, 24)) as pilot:
        await forward(pilot, 3)
        assert app.screen.step == "review"
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")  # stay
        await pilot.pause()
        assert app.screen.step == "review" and not (work / "ds_config.json").exists()
        await pilot.press("ctrl+n")
        await pilot.pause()
        await pilot.press("y")  # save and go on
        await pilot.pause()
        assert app.screen.step == "launch" and (work / "ds_config.json").exists()
        assert app.state.saved_path == work / "ds_config.json"


@pytest.mark.slow
async def test_real_tiny_mamba_cpu_run_then_stop(work: Path) -> None:
    """The CPU demo through the real deepspeed launcher: log lines, a loss, a clean stop."""
    from ds_wizard.core.runs.runstate import list_run_summaries
    from ds_wizard.launch.client import stop_run

    app = wizard(no_gpus, steps=200)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.app.workers.wait_for_complete()
            await pilot.pause()
            await pilot.press("ctrl+t")  # CPU demo: tiny_mamba on 2 CPU ranks
            await to_launch(pilot)
            assert app.state.saved_path is not None
            await pilot.press("ctrl+l")
            launch = app.screen
            log = launch.query_one("#log", Log)
            # the first run on a machine JIT-builds DeepSpeed's CPU comm op (about 2
            # minutes); the log line of a step follows its metrics record by a moment
            await wait_for(pilot, lambda: (launch._losses and any(
                "loss" in line for line in log.lines)) or not launch.running, timeout=420)
            assert launch.running, "\n".join(log.lines[-20:])
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
    finally:
        # the run outlives the UI by design: a failed assertion must not leave it running
        for summary in list_run_summaries(work / "runs"):
            if summary.alive:
                stop_run(summary.run_dir, now=True)


async def test_attach_follows_a_run_under_its_own_supervisor(work: Path) -> None:
    """`ds-wizard attach RUN`: the launch screen shows the run's log, and the run's own
    end (here: already recorded, its supervisor gone) ends the screen's job."""
    import json

    from ds_wizard.core.runs.runstate import RunState, write_run_state

    run_dir = work / "runs" / "tiny_mamba-20261129-120000"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"preset": "tiny_mamba", "steps": 3}))
    (run_dir / "train.log").write_text("".join(f"step {i}/3 loss {5 - i}\n"
                                               for i in range(1, 4)))
    write_run_state(run_dir, RunState("finished", 999_999_999, exit_code=0,
                                      stop_reason="finished"))
    app = wizard(attach=run_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.screen.step == "launch"
        await wait_for(pilot, lambda: not app.screen.running
                       and "step 3/3 loss 2" in app.screen.query_one("#log", Log).lines)
        assert "finished" in text_of(app, "#launch-result")
