"""From the wizard's choices to a running job, through ds_wizard.launch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ds_wizard.core.errors import DsWizardError

if TYPE_CHECKING:
    from ds_wizard.launch.plan import RunPlan
    from ds_wizard.screens.launch import Job
    from ds_wizard.screens.state import WizardState


class PreparedRun:
    """A multi-node run whose scripts were written but which starts elsewhere: on the
    hostfile's head node, or under Slurm. It satisfies the ``Job`` protocol so the launch
    step shows what was written; there is no process to stop."""

    prepared = True
    pid = 0

    def __init__(self, plan: RunPlan, lines: list[str]) -> None:
        self.run_dir: Path | None = plan.run_dir
        script = plan.sbatch or plan.paths.script
        self.command = f"sbatch {script}" if plan.sbatch else f"bash {script}"
        self._lines = lines

    def lines(self) -> Iterator[str]:
        yield from self._lines

    def stop(self) -> int | None:
        return 0

    def wait(self) -> int:
        return 0


def launcher_job(state: WizardState) -> Job:
    """``prepare_run`` with the saved config (it is checked again), then ``start``.

    A multi-node job starts here only on the hostfile's head node (DeepSpeed's runner
    reaches the other nodes over ssh); elsewhere, and without a hostfile, its scripts are
    written instead: ``launch_deepspeed.sh`` for the head node, or an sbatch script.
    """
    from ds_wizard.core.runspec import Accelerator
    from ds_wizard.core.topology import is_head_node
    from ds_wizard.launch.plan import LaunchRequest, prepare_run, scripts_text
    from ds_wizard.launch.supervisor import start

    if state.preset is None:
        raise DsWizardError("no preset chosen", "pick one on the preset step")
    if state.saved_path is None:
        raise DsWizardError("the config is not saved yet", "save it on the review step (^s)")
    accelerator = Accelerator("cpu", 0, "CPU demo") if state.cpu_demo else None
    topo = state.topology()
    nodes: dict[str, object] = {}
    if topo.multi_node:
        nodes = ({"hostfile": topo.hostfile, "gpus_per_node": state.gpus_per_node}
                 if topo.hostfile else
                 {"num_nodes": topo.nodes, "gpus_per_node": topo.gpus_per_node,
                  "slurm": True})
    plan = prepare_run(LaunchRequest(
        state.preset, None if topo.multi_node else state.world_size,
        config_path=state.saved_path, steps=state.steps, runs_dir=state.runs_dir,
        gpu_report=state.report, accelerator=accelerator, **nodes,  # type: ignore[arg-type]
    ))
    if topo.multi_node and (plan.sbatch is not None or not is_head_node(topo)):
        return PreparedRun(plan, scripts_text(plan))
    return start(plan)
