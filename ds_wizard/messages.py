"""Messages the wizard's workers and screens post; all of them live here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message

from ds_wizard.core.gpus import GpuReport


@dataclass
class GpusDetected(Message):
    """The GPU probe finished (it ran in a thread worker)."""

    report: GpuReport


@dataclass
class StepChanged(Message):
    """The app moved to another step; screens refresh from the shared state."""

    step: str


@dataclass
class JobStarted(Message):
    pid: int
    command: str
    run_dir: str


@dataclass
class JobOutput(Message):
    """Lines the job printed since the last message (batched so a chatty job stays cheap)."""

    lines: list[str]


@dataclass
class JobMetrics(Message):
    """New records from the run's metrics.jsonl."""

    records: list[dict[str, Any]]


@dataclass
class JobExited(Message):
    returncode: int
    stopped: bool  # the user asked for the stop
    last_lines: list[str]
    error: str | None = None  # the job could not be started at all
