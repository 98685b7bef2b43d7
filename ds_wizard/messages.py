"""Messages the wizard's workers and screens post; all of them live here."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from ds_wizard.core.plan.gpus import GpuInventory


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
