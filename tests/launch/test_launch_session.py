"""What `ds-wizard launch` decides after parsing (ds_wizard.launch.session): the text of a
run that starts nothing here, and how a followed run ended (exit status, its one line)."""

from __future__ import annotations

import signal
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from fakes import FAKE_TRAINER, NO_GPU

from ds_wizard.core.base.errors import ExitCode
from ds_wizard.core.runs.rundir import CheckpointInfo, RunPaths
from ds_wizard.core.runs.runstate import RunState
from ds_wizard.launch import session
from ds_wizard.launch.plan import LaunchRequest

PATHS = RunPaths(Path("/runs/tiny_mamba-1"))
CKPT = CheckpointInfo(tag="global_step20", step=20, path=PATHS.checkpoints / "global_step20",
                      complete=True)


def _end(status: str | None, *, pid: int = 7, latest: CheckpointInfo | None = CKPT,
         code: int | None = 0, signum: int | None = None, **state: object) -> session.RunEnd:
    recorded = None if status is None else RunState(status, supervisor_pid=pid, **state)
    return session.run_end(PATHS, recorded, latest, supervisor_pid=7, supervisor_code=code,
                           signum=signum, stderr_lines=["error: the disk is full", "noise"])


def test_a_finished_run_exits_0_and_names_its_outputs() -> None:
    end = _end("finished")
    assert (end.exit_code, end.failed, end.to_stderr) == (0, False, False)
    assert end.message == (f"✅ training finished: checkpoint global_step20; weights in "
                           f"{PATHS.final}; metrics in {PATHS.metrics}")


def test_a_stop_exits_128_plus_the_signal_and_says_how_to_resume() -> None:
    end = _end("stopped", stop_reason="stopped on request", signum=signal.SIGINT)
    assert end.exit_code == 130 and end.to_stderr and not end.failed
    assert "stopped (stopped on request): checkpoint global_step20" in end.message
    assert end.message.endswith("`ds-wizard launch --resume tiny_mamba-1`")
    # a stop before any checkpoint: nothing to resume, and a SIGTERM's own status
    early = _end(None, latest=None, signum=signal.SIGTERM, code=None)
    assert early.exit_code == ExitCode.SIGNAL_BASE + signal.SIGTERM
    assert "nothing to resume" in early.message


def test_a_failure_keeps_the_ranks_code_and_its_reason() -> None:
    end = _end("failed", code=None, exit_code=3, stop_reason="rank 1 exited with 3")
    assert (end.exit_code, end.failed) == (3, True)
    assert end.message == "training failed: rank 1 exited with 3"
    assert end.hint == f"see {PATHS.log}; checkpoint global_step20"
    with pytest.raises(session.TrainingFailed) as caught:
        end.raise_if_failed()
    assert caught.value.exit_code == 3


def test_a_record_of_another_supervisor_does_not_count() -> None:
    """state.json of an earlier launch of the same run says nothing about this one: the
    reason then comes from the supervisor's own `error:` line."""
    end = _end("finished", pid=99, code=1)
    assert end.failed and end.exit_code == 1
    assert end.message == "training failed: the disk is full"
    # an exit status outside 1..255 is no status a shell can show: 1
    assert _end("failed", code=None, exit_code=300).exit_code == ExitCode.PROBLEM


def test_a_dry_run_previews_and_creates_nothing(tmp_path: Path) -> None:
    plan = session.plan_launch(LaunchRequest("tiny_mamba", runs_dir=tmp_path, dry_run=True,
                                             gpu_report=NO_GPU, steps=3))
    text = session.preview_text(plan, dry_run=True)
    assert text is not None and "would train 3 step(s)" in text
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_follow_runs_the_job_under_its_supervisor_to_the_end(tmp_path: Path) -> None:
    """The foreground path end to end, with a stand-in trainer for the DeepSpeed job."""
    plan = session.plan_launch(LaunchRequest("tiny_mamba", runs_dir=tmp_path,
                                             gpu_report=NO_GPU, steps=3))
    assert session.preview_text(plan, dry_run=False) is None
    lines = session.start_lines(plan)
    assert lines[-2] == f"📁 run directory: {plan.run_dir}" and lines[-1].startswith("🚀 ")
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAINER)
    fake = replace(plan, command=(sys.executable, str(script), str(plan.run_dir), "3", "ok"))
    said: list[tuple[str, bool]] = []
    watch = session.first_run_watch(fake, lambda line: said.append((line, False)))
    end = session.follow(fake, 5.0, watch, lambda line, err: said.append((line, err)))
    assert (end.exit_code, end.failed) == (0, False), said
    assert ("step 3 loss 1.6667", False) in said
    assert end.message.startswith("✅ training finished: no checkpoint yet")
