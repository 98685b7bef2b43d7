"""What the TUI tests share: the wizard as tests build it, the pilot moves that walk it, the
readers of what it shows, and a fake runs door. The fixtures are in ``conftest.py``.

Every app comes from ``make_app`` (through :func:`wizard`), the door the CLI uses.
"""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from fakes import gpu_probe, wait_for
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from ds_wizard.app import WizardApp, make_app
from ds_wizard.core.runs.runstate import RunStatus, RunSummary
from ds_wizard.screens.dialogs import ConfirmScreen
from ds_wizard.screens.runs import RunsScreen


def wizard(probe: Any = None, **kw: Any) -> WizardApp:
    """The wizard with 4 fake GPUs (unless ``probe`` says otherwise) and no cursor blink."""
    return make_app(probe if probe is not None else gpu_probe(4), cursor_blink=False, **kw)


# -- reading ------------------------------------------------------------------------------
def text_of(app: WizardApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


def record_notifications(app: WizardApp) -> list[str]:
    """Every message the app shows as a toast, from now on."""
    shown: list[str] = []
    real = app.notify

    def notify(message: str, **kw: Any) -> None:
        shown.append(message)
        real(message, **kw)

    app.notify = notify  # type: ignore[method-assign]
    return shown


# -- driving ------------------------------------------------------------------------------
async def settle(pilot: Pilot) -> None:
    """Let the workers finish (the GPU probe, the batch view) and the screen redraw."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


async def clear_and_type(pilot: Pilot, text: str) -> None:
    """Replace the focused field's text."""
    await pilot.press("end", "ctrl+u", *list(text))


async def type_into(pilot: Pilot, selector: str, text: str) -> None:
    """Focus a field and replace its text."""
    pilot.app.screen.query_one(selector).focus()
    await clear_and_type(pilot, text)


async def type_micro_gas(pilot: Pilot, micro: str, gas: str) -> None:
    """With the micro-batch field focused (as the batch step opens), fill both fields."""
    assert pilot.app.focused is not None and pilot.app.focused.id == "micro"
    await clear_and_type(pilot, micro)
    await pilot.press("tab")
    await clear_and_type(pilot, gas)


async def forward(pilot: Pilot, steps: int) -> None:
    """From a settled app, Next ``steps`` times (with the defaults each step shows)."""
    await settle(pilot)
    for _ in range(steps):
        await pilot.press("ctrl+n")
        await pilot.pause()


async def to_batch(pilot: Pilot) -> None:
    await forward(pilot, 2)
    assert pilot.app.screen.step == "batch"


async def save_config(pilot: Pilot) -> None:
    """^s on the review step; the "Saved" toast is cleared (it would cover the screen)."""
    await pilot.press("ctrl+s")
    await pilot.pause()
    pilot.app.clear_notifications()


async def to_launch(pilot: Pilot, save: bool = True) -> None:
    """Forward to the launch step. ``save``: ^s on the review step; otherwise the review
    step asks to save first, and the answer is yes."""
    await forward(pilot, 3)
    if save:
        await save_config(pilot)
    await pilot.press("ctrl+n")
    await pilot.pause()
    if isinstance(pilot.app.screen, ConfirmScreen):
        await pilot.press("y")  # "Save and go on"
        await pilot.pause()
    assert pilot.app.screen.step == "launch"


# -- the Runs screen ----------------------------------------------------------------------
class FollowJob:
    """A run followed by the launch step: lines until stopped or left (no process)."""

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


def run_summary(run_dir: Path, status: RunStatus, step: int, total: int = 100,
                ckpt: int | None = None) -> RunSummary:
    return RunSummary(
        name=run_dir.name, run_dir=run_dir, preset="tiny_mamba", status=status, step=step,
        total_steps=total, loss=5.0 / step, tokens_per_s=1234.0,
        started="2026-11-29T10:00:00", ended=None, exit_code=None, stop_reason=None,
        stopping=False, supervisor_pid=1 if status == RunStatus.RUNNING else None,
        supervisor_alive=status == RunStatus.RUNNING, pgid=None,
        pids=(1,) if status == RunStatus.RUNNING else (), checkpoint_step=ckpt)


class FakeRuns:
    """The runs door (``WizardContext.runs``) over three runs with metrics files: a
    finished one, a stopped one with a checkpoint, a running one. Records every call."""

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
            self.rows.append(run_summary(run_dir, status, steps, ckpt=ckpt))

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


async def open_runs(pilot: Pilot) -> RunsScreen:
    """^e from a settled app, until the Runs screen lists the runs."""
    await settle(pilot)
    await pilot.press("ctrl+e")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, RunsScreen)
                   and pilot.app.screen.summaries)
    await pilot.pause()
    return pilot.app.screen


async def cursor_to(pilot: Pilot, screen: RunsScreen, name: str) -> None:
    table = screen.query_one("#runs-table", DataTable)
    table.move_cursor(row=table.get_row_index(name))
    await pilot.pause()
    assert screen.current is not None and screen.current.name == name
