"""What the app hands every screen: one frozen :class:`WizardContext`.

The app (``ds_wizard.app``) builds the context once, in ``make_app``, and passes it to
each screen's constructor. A screen reads the shared answers (``ctx.state``) and calls
the services the context carries (the GPU probe, the job factory, the runs door). It
reports back with the messages in ``ds_wizard.messages``, which the app handles; it never
imports the app, which an import-linter contract enforces.

To give the screens something new: add a typed field here (a ``Protocol`` for anything
with several calls, with a default when a test or the CLI need not care), fill it in
``make_app``, and read it as ``self.ctx.<field>``. Something a screen asks the app to do
is a new message in ``ds_wizard.messages`` and an ``on_…`` handler on the app.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ds_wizard.core.plan.gpus import GpuProbe
    from ds_wizard.core.runs.doctor import DoctorReport
    from ds_wizard.core.runs.runstate import RunSummary
    from ds_wizard.screens.state import WizardState


class Job(Protocol):
    """A started job: its output, and a graceful stop of its whole process group."""

    pid: int
    command: str
    run_dir: Path | None

    def lines(self) -> Iterator[str]: ...

    def stop(self) -> int | None: ...

    def wait(self) -> int: ...


# the real one is ds_wizard.screens.jobs.launcher_job; tests pass a scripted job
JobFactory = Callable[["WizardState"], Job]


# ds-wizard doctor for the state's machine and preset (the real one is
# ds_wizard.screens.jobs.launcher_doctor)
DoctorProbe = Callable[["WizardState"], "DoctorReport"]


class RunsApi(Protocol):
    """The runs on this machine (``screens.jobs.LauncherRuns`` is the real one). A door
    may also offer ``resume_offer(run_dir)`` and ``resume(run_dir, num_gpus=N)``: the Runs
    screen then offers a resume on this machine's number of ranks (issue 21)."""

    def summaries(self, runs_dir: Path) -> list[RunSummary]: ...

    def attach(self, run_dir: Path) -> Job: ...

    def stop(self, run_dir: Path) -> str: ...

    def resume(self, run_dir: Path) -> Job: ...


@dataclass(frozen=True)
class Step:
    """One wizard step: its screen name (``WizardScreen.step``) and the step bar's title."""

    name: str
    title: str


@dataclass(frozen=True)
class WizardContext:
    """Everything a screen may use that it does not own."""

    state: WizardState  # every answer, shared by all steps (mutable; the reference is not)
    steps: tuple[Step, ...]  # in order
    gpu_probe: GpuProbe
    job_factory: JobFactory
    runs: RunsApi
    doctor: DoctorProbe
    cwd: Path  # where relative paths (output, presets) are read from
    cursor_blink: bool = True  # False in tests and snapshots

    @property
    def step_names(self) -> tuple[str, ...]:
        return tuple(step.name for step in self.steps)

    def title(self, name: str) -> str:
        return next(step.title for step in self.steps if step.name == name)
