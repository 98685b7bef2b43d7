"""Adapters from the wizard's choices to a running job (see launch.Job)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ds_wizard.screens.launch import Job
    from ds_wizard.screens.state import WizardState


def launcher_job(state: WizardState) -> Job:
    raise NotImplementedError("launcher not available yet")
