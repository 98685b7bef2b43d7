"""Messages the wizard's workers and screens post; all of them live here.

Screens report to the app only through these: a screen posts one on itself, it bubbles
to the app, and the app's ``on_…`` handler acts (the screens never import the app).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message

from ds_wizard.core.plan.gpus import GpuInventory

if TYPE_CHECKING:
    from textual.worker import Worker

    from ds_wizard.screens.context import Job


@dataclass
class GpusDetected(Message):
    """The GPU probe finished (it ran in a thread worker)."""

    report: GpuInventory


@dataclass
class JobStarted(Message):
    pid: int
    command: str
    run_dir: str


@dataclass
class JobExited(Message):
    returncode: int
    stopped: bool  # the user asked for the stop
    error: str | None = None  # the job could not be started at all


# -- from a screen to the app ----------------------------------------------------------------
class NextStep(Message):
    """Check the current step and go on to the next one (the screen's Next)."""


class PrevStep(Message):
    """Back to the previous step; the answers are kept."""


@dataclass
class FollowRun(Message):
    """Show this job (attached to or resumed) on the launch step."""

    job: Job


@dataclass
class WorkerFailed(Message):
    """A screen's worker raised something unexpected: the app shows it and lives on."""

    worker: Worker
