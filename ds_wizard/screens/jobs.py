"""From the wizard's choices to a running job, through ds_wizard.launch."""

from __future__ import annotations

import os
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
    if state.planning_elsewhere:
        raise DsWizardError(
            f"the config is planned for another machine ({state.machine_label})",
            "run its .launch.sh there, or press ^t on the GPU step for a CPU demo here")
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
    from ds_wizard.core.jit_ops import expected_builds, first_run_notice

    notice = first_run_notice(expected_builds(plan.accelerator.kind, plan.config,
                                              env=plan.env | dict(os.environ)))
    job = start(plan)
    job.first_run_notice = notice  # shown before the ranks' own output
    return job
