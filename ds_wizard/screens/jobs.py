"""From the wizard's choices to a running job, through ds_wizard.launch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ds_wizard.core.errors import DsWizardError

if TYPE_CHECKING:
    from ds_wizard.screens.launch import Job
    from ds_wizard.screens.state import WizardState


def launcher_job(state: WizardState) -> Job:
    """``prepare_run`` with the saved config (it is checked again), then ``start``."""
    from ds_wizard.core.runspec import Accelerator
    from ds_wizard.launch.plan import LaunchRequest, prepare_run
    from ds_wizard.launch.supervisor import start

    if state.preset is None:
        raise DsWizardError("no preset chosen", "pick one on the preset step")
    if state.saved_path is None:
        raise DsWizardError("the config is not saved yet", "save it on the review step (^s)")
    if not state.cpu_demo and state.nodes > 1:
        raise DsWizardError(
            "multi-node jobs are not launched from the wizard",
            "run the saved config with `deepspeed --hostfile …` on the head node",
        )
    accelerator = Accelerator("cpu", 0, "CPU demo") if state.cpu_demo else None
    plan = prepare_run(LaunchRequest(
        state.preset, state.world_size, config_path=state.saved_path, steps=state.steps,
        runs_dir=state.runs_dir, gpu_report=state.report, accelerator=accelerator,
    ))
    return start(plan)
