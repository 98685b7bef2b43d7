"""The GPU step's doctor panel (^d): hidden until asked, then the doctor's ✔/✘ lines,
computed in a worker off the UI thread."""

from __future__ import annotations

import pytest
from fakes import no_gpus
from tui_pilot import settle, wizard

from ds_wizard.core.runs.doctor import FAIL, Check, DoctorReport
from ds_wizard.screens.doctor_panel import DoctorPanel, report_text
from ds_wizard.screens.state import WizardState

pytestmark = [pytest.mark.anyio]


async def test_ctrl_d_shows_the_doctor_for_the_cpu_demo(monkeypatch) -> None:
    monkeypatch.setenv("DS_WIZARD_CACHE_DIR", "cache")
    app = wizard(no_gpus)
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        panel = app.screen.query_one(DoctorPanel)
        assert not panel.display  # nothing runs, and nothing shows, until asked
        await pilot.press("ctrl+t", "ctrl+d")
        await pilot.pause()
        assert panel.display
        await app.workers.wait_for_complete()
        await pilot.pause()
        shown = str(panel.render())
        assert "✔ host RAM: 2 CPU rank(s)" in shown
        assert "✔ Mamba kernels: CPU ranks" in shown
        assert "can run the job" in shown


def test_a_failure_shows_its_fix() -> None:
    report = DoctorReport((Check("disk", "disk for checkpoints", FAIL, "1 GiB free",
                                 "pass --runs-dir on a larger disk"),), {}, {})
    text = report_text(report).plain
    assert "✘ disk for checkpoints: 1 GiB free" in text
    assert "fix: pass --runs-dir on a larger disk" in text and "cannot run here" in text


async def test_the_doctor_comes_from_the_context_and_gets_the_answers_on_screen() -> None:
    """The GPU step asks the doctor it was given (``make_app(doctor=…)``), with the
    answers as they are when ^d is pressed."""
    asked: list[WizardState] = []

    def doctor(state: WizardState) -> DoctorReport:
        asked.append(state)
        return DoctorReport((Check("shm", "/dev/shm", FAIL, "64 MiB", "mount a larger one"),),
                            {}, {})

    app = wizard(no_gpus, doctor=doctor)
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+t", "ctrl+d")
        await settle(pilot)
        shown = str(app.screen.query_one(DoctorPanel).render())
    (state,) = asked
    assert state.cpu_demo and state.world_size == 2 and state is not app.state
    assert "✘ /dev/shm: 64 MiB" in shown and "fix: mount a larger one" in shown
