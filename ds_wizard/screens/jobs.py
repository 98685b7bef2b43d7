"""From the wizard's choices to a running job, through ds_wizard.launch.

The wizard is a client of the run, like ``ds-wizard launch``: the job runs under its own
supervisor process (see ``ds_wizard.launch.client``), so quitting the wizard, a dropped
terminal or ``kill -9`` of it leaves the run listed (``ds-wizard runs``) and stoppable.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.screens.state import CPU_DEMO_PRESET

if TYPE_CHECKING:
    from ds_wizard.core.runs.doctor import DoctorReport
    from ds_wizard.core.runs.reshape import ResumeOffer
    from ds_wizard.core.runs.runstate import RunSummary
    from ds_wizard.launch.plan import PreparedRun
    from ds_wizard.screens.context import Job
    from ds_wizard.screens.state import WizardState


class RunClientJob:
    """The launch screen's ``Job`` for a run under its own supervisor.

    ``lines()`` follows the run's train.log; ``stop()`` asks the supervisor for a graceful
    stop and waits; ``leave()`` stops following and leaves the run running.
    """

    outlives_client = True

    def __init__(self, run_dir: Path, pid: int, command: str, offset: int) -> None:
        self.run_dir: Path | None = run_dir
        self._dir = run_dir
        self.pid = pid
        self.command = command
        self._offset = offset
        self._leave = threading.Event()
        self.first_run_notice: str | None = None

    @classmethod
    def attach(cls, run_dir: Path, lines: int = 200) -> RunClientJob:
        """Follow a run that is already going (``ds-wizard attach``)."""
        from ds_wizard.core.runs.runstate import read_run_state
        from ds_wizard.launch.client import tail_offset

        state = read_run_state(run_dir)
        return cls(run_dir, state.supervisor_pid if state else 0,
                   state.command if state else "", tail_offset(run_dir, lines))

    def alive(self) -> bool:
        from ds_wizard.launch.client import run_alive

        return run_alive(self._dir)

    def lines(self) -> Iterator[str]:
        from ds_wizard.launch.client import follow_log

        return follow_log(self._dir, self._offset, self.alive, stop=self._leave)

    def stop(self) -> int | None:
        from ds_wizard.launch.client import stop_run

        if not self.alive():
            return self.wait()
        stop_run(self._dir)
        return self.wait()

    def leave(self) -> None:
        self._leave.set()

    def wait(self) -> int:
        """The launcher's exit code once the run has ended (-1 when left running)."""
        from ds_wizard.core.runs.runstate import read_run_state

        while not self._leave.is_set() and self.alive():
            time.sleep(0.2)
        state = read_run_state(self._dir)
        if self._leave.is_set() or state is None:
            return -1
        if state.status in ("finished", "stopped"):
            return 0
        return state.exit_code if state.exit_code not in (None, 0) else 1

    def pids(self) -> list[int]:
        from ds_wizard.launch.client import job_pids

        return job_pids(self._dir)


class ScriptsOnlyJob:
    """A multi-node run whose scripts were written but which starts elsewhere: on the
    hostfile's head node, or under Slurm. It satisfies the ``Job`` protocol so the launch
    step shows what was written; there is no process to stop."""

    prepared = True
    pid = 0

    def __init__(self, plan: PreparedRun, lines: list[str]) -> None:
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
    """``prepare_run`` with the saved config (it is checked again), then a supervisor.

    A multi-node job starts here only on the hostfile's head node (DeepSpeed's runner
    reaches the other nodes over ssh); elsewhere, and without a hostfile, its scripts are
    written instead: ``launch_deepspeed.sh`` for the head node, or an sbatch script.
    """
    from ds_wizard.core.batch.topology import is_head_node
    from ds_wizard.core.runs.runspec import Accelerator
    from ds_wizard.launch import client
    from ds_wizard.launch.plan import LaunchRequest, prepare_run, scripts_text

    if state.preset is None:
        raise DsWizardError("no preset chosen", "pick one on the preset step")
    if state.saved_path is None:
        raise DsWizardError("the config is not saved yet", "save it on the review step (^s)")
    if state.planning_elsewhere and not state.topology().multi_node:
        raise DsWizardError(
            f"the config is planned for another machine ({state.machine_label})",
            "run its .launch.sh there, or press ^t on the GPU step for a CPU demo here")
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
        return ScriptsOnlyJob(plan, scripts_text(plan))
    from ds_wizard.core.runs.jit_ops import expected_builds, first_run_notice

    notice = first_run_notice(expected_builds(plan.accelerator.kind, plan.config,
                                              env=plan.env | dict(os.environ)))
    # detach: the supervisor's own messages go to RUN_DIR/supervisor.log, not onto the UI
    started = client.start_supervisor(plan, detach=True)
    job = RunClientJob(plan.paths.root, started.pid, plan.command_text, started.log_offset)
    job.first_run_notice = notice  # shown before the ranks' own output
    return job


def launcher_doctor(state: WizardState) -> DoctorReport:
    """``ds-wizard doctor`` for what the GPU step shows (the GPU step's ^d; slow: the
    kernel import is a subprocess, ssh to every host longer, so it runs in a worker)."""
    from ds_wizard.core.presets.lookup import DEFAULT_PRESET
    from ds_wizard.launch.doctor import DoctorRequest, run_doctor
    from ds_wizard.launch.plan import LaunchRequest

    preset = state.preset_ref or (CPU_DEMO_PRESET if state.uses_cpu else DEFAULT_PRESET)
    return run_doctor(DoctorRequest(LaunchRequest(
        preset, None if state.hostfile else state.world_size,
        hostfile=state.hostfile or None, gpu_report=state.report,
        runs_dir=state.runs_dir)))


class LauncherRuns:
    """The Runs screen's door to the runs: list, follow, stop and resume them through
    ``core.runstate`` and ``ds_wizard.launch`` (tests pass a fake with the same methods)."""

    def resume_offer(self, run_dir: Path) -> ResumeOffer | None:
        """Resume on this machine's ranks, when their number differs from the run's."""
        from ds_wizard.core.base.defaults import CPU_DEFAULT_RANKS
        from ds_wizard.core.check.checker import load_config_file
        from ds_wizard.core.plan.gpus import detect_gpus
        from ds_wizard.core.runs import rundir
        from ds_wizard.core.runs.reshape import resume_offer

        info = rundir.load_run_json(run_dir)
        gpus = detect_gpus().count if info.get("accelerator") == "cuda" else 0
        here, device = (gpus, "GPU") if gpus else (CPU_DEFAULT_RANKS, "CPU rank")
        cfg = load_config_file(rundir.RunPaths(run_dir).config)
        return resume_offer(cfg, int(info.get("world_size", 0)), here, device)

    def summaries(self, runs_dir: Path) -> list[RunSummary]:
        from ds_wizard.core.runs.runstate import list_run_summaries

        return list_run_summaries(runs_dir)

    def attach(self, run_dir: Path) -> Job:
        return RunClientJob.attach(run_dir)

    def stop(self, run_dir: Path) -> str:
        """Graceful stop (checkpoint first); returns once nothing of the run is left."""
        from ds_wizard.launch.client import stop_run

        return stop_run(run_dir).message

    def resume(self, run_dir: Path, num_gpus: int | None = None) -> Job:
        """``launch --resume`` of a stopped run, under its own supervisor; ``num_gpus``:
        on that many ranks instead (a universal checkpoint, launch.reshape)."""
        from ds_wizard.launch.client import refuse_if_running, start_supervisor
        from ds_wizard.launch.plan import LaunchRequest, prepare_run

        refuse_if_running(run_dir)
        plan = prepare_run(LaunchRequest(resume=str(run_dir), runs_dir=run_dir.parent,
                                         num_gpus=num_gpus))
        started = start_supervisor(plan, detach=True)
        return RunClientJob(plan.paths.root, started.pid, plan.command_text,
                            started.log_offset)
