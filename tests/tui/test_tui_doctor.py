"""The GPU step's doctor panel (^d): hidden until asked, then the doctor's ✔/✘ lines,
computed in a worker off the UI thread."""

from __future__ import annotations

import pytest
from fakes import no_gpus

from ds_wizard.app import make_app
from ds_wizard.core.runs.doctor import FAIL, Check, DoctorReport
from ds_wizard.screens.doctor_panel import DoctorPanel, report_text

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("work")]


async def test_ctrl_d_shows_the_doctor_for_the_cpu_demo(monkeypatch) -> None:
    monkeypatch.setenv("DS_WIZARD_CACHE_DIR", "cache")
    app = make_app(no_gpus, cursor_blink=False)
    async with app.run_test(size=(100, 40)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
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
