"""Issue 21 in the wizard: the Runs screen's resume offers this machine's number of ranks
when it differs from the run's, showing the new split of the same global batch before
anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import gpu_probe, isolate, wait_for
from test_tui_runs import FakeRuns, cursor_to, open_runs
from textual.widgets import Button, Static

from ds_wizard.app import make_app
from ds_wizard.core.runs.reshape import resume_offer
from ds_wizard.screens.launch import LaunchScreen
from ds_wizard.screens.resume import ResumeWhereScreen

pytestmark = [pytest.mark.anyio]

CFG = {"train_batch_size": 12, "train_micro_batch_size_per_gpu": 3,
       "gradient_accumulation_steps": 2}


class OfferingRuns(FakeRuns):
    """The fake runs door, on a machine with ``here`` GPUs; runs were trained on 2."""

    def __init__(self, runs_dir: Path, here: int, cfg: dict) -> None:
        super().__init__(runs_dir)
        self.here, self.cfg = here, cfg

    def resume_offer(self, run_dir: Path):
        return resume_offer(self.cfg, 2, self.here, "GPU")

    def resume(self, run_dir: Path, num_gpus: int | None = None):
        job = super().resume(run_dir)
        self.calls[-1] = ("resume", run_dir.name, num_gpus)
        return job


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate(tmp_path, monkeypatch)


async def test_resume_offers_this_machines_ranks_with_the_new_split(work: Path) -> None:
    fake = OfferingRuns(work / "runs", here=3, cfg=CFG)
    app = make_app(gpu_probe(3), cursor_blink=False, runs_api=fake, cwd=work)
    async with app.run_test(size=(120, 34)) as pilot:
        screen = await open_runs(pilot)
        await cursor_to(pilot, screen, "tiny_mamba-b")
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, ResumeWhereScreen))
        dialog = app.screen
        text = str(dialog.query_one("#resume-detail", Static).render())
        assert "trained on 2 ranks" in text
        assert "on this machine (3 GPUs): global batch 12 = 2 × 2 × 3" in text
        assert "(m)" in str(dialog.query_one("#here", Button).label)
        assert fake.calls == []  # nothing starts before the answer
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen))
        assert fake.calls == [("resume", "tiny_mamba-b", 3)]
        fake.jobs[0].leave()
        await wait_for(pilot, lambda: not app.job_running)


async def test_an_indivisible_batch_offers_only_the_runs_own_ranks(work: Path) -> None:
    fake = OfferingRuns(work / "runs", here=3, cfg={**CFG, "train_batch_size": 16})
    app = make_app(gpu_probe(3), cursor_blink=False, runs_api=fake, cwd=work)
    async with app.run_test(size=(120, 34)) as pilot:
        screen = await open_runs(pilot)
        await cursor_to(pilot, screen, "tiny_mamba-b")
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, ResumeWhereScreen))
        text = str(app.screen.query_one("#resume-detail", Static).render())
        assert "nearest valid global batches: 15 or 18" in text
        assert app.screen.query_one("#here", Button).disabled
        await pilot.press("m")  # refused: nothing happens
        await pilot.pause()
        assert fake.calls == []
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen))
        assert fake.calls == [("resume", "tiny_mamba-b", None)]
        fake.jobs[0].leave()
        await wait_for(pilot, lambda: not app.job_running)
