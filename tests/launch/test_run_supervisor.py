"""The per-run supervisor and its clients, with a fake job shaped like DeepSpeed's
(runner → launch.py → rank): state.json, the lock, stop, a lost supervisor, a full disk.
Fast: no DeepSpeed, no torch."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner
from test_launch_plan import CPU

from ds_wizard.cli import main
from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.runs.runstate import RunStatus, read_run_state, summarize_run
from ds_wizard.launch import plan as planning
from ds_wizard.launch.client import follow_log, start_supervisor, stop_run
from ds_wizard.launch.plan import LaunchRequest
from ds_wizard.launch.supervisor import acquire_run_lock, supervisor_argv

# the fake rank prints a line every 0.1 s so "the log grows" can be seen
TICKING_RANK = """
import signal, sys, time
stop = []
signal.signal(signal.SIGINT, lambda signum, frame: stop.append(signum))
print("rank up", flush=True)
i = 0
while not stop:
    i += 1
    print(f"tick {i}", flush=True)
    time.sleep(0.1)
print("rank: checkpoint", flush=True)
time.sleep(0.3)
print("rank: saved", flush=True)
"""


def fake_plan(tmp_path: Path, rank: str = TICKING_RANK) -> planning.PreparedRun:
    plan = planning.prepare_run(LaunchRequest("tiny_mamba", None, steps=3, runs_dir=tmp_path,
                                              accelerator=CPU))
    launch_py = (
        "import signal, subprocess, sys\n"
        f"rank = subprocess.Popen([sys.executable, '-c', {rank!r}, '-m', 'ds_wizard.train',"
        f" '--run-dir', {str(plan.paths.root.resolve())!r}])\n"
        "def cut(signum, frame):\n    rank.kill()\n"
        "signal.signal(signal.SIGINT, cut)\nsignal.signal(signal.SIGTERM, cut)\n"
        "sys.exit(rank.wait())\n")
    runner_py = ("import subprocess, sys\n"
                 f"sys.exit(subprocess.run([sys.executable, '-c', {launch_py!r}, '--run-dir',"
                 f" {str(plan.paths.root.resolve())!r}]).returncode)\n")
    return dataclasses.replace(plan, command=(sys.executable, "-c", runner_py, "--run-dir",
                                              str(plan.paths.root.resolve())))


def wait_until(cond, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def no_process_of(run_dir: Path) -> bool:
    return not summarize_run(run_dir).pids


@pytest.fixture
def started(tmp_path: Path):
    plan = fake_plan(tmp_path)
    client = start_supervisor(plan, grace_s=20, detach=True)
    run_dir = plan.paths.root
    yield plan, client, run_dir
    s = summarize_run(run_dir)
    for pid in [*s.pids, client.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_the_supervisor_records_the_run_and_a_graceful_stop(started) -> None:
    plan, client, run_dir = started
    wait_until(lambda: "tick 3" in plan.paths.log.read_text())
    state = read_run_state(run_dir)
    assert state is not None and state.status == "running"
    assert state.supervisor_pid == client.pid and state.pgid and state.steps == 3
    assert os.getsid(client.pid) == client.pid  # its own session: no terminal reaches it
    summary = summarize_run(run_dir)
    assert summary.status is RunStatus.RUNNING and len(summary.pids) == 3
    out = CliRunner().invoke(main, ["runs", "--runs-dir", str(run_dir.parent)])
    assert run_dir.name in out.output and "running" in out.output
    result = stop_run(run_dir, grace_s=20)
    assert result.status is RunStatus.STOPPED
    text = plan.paths.log.read_text()
    assert text.startswith("$ ") and "rank: saved" in text
    state = read_run_state(run_dir)
    assert (state.status, state.exit_code, state.stop_reason) == ("stopped", 0,
                                                                 "stopped on request")
    assert no_process_of(run_dir)
    assert not psutil.pid_exists(client.pid) or \
        psutil.Process(client.pid).status() == psutil.STATUS_ZOMBIE


def test_follow_log_streams_new_lines_until_the_run_ends(started) -> None:
    _, client, run_dir = started
    seen: list[str] = []
    for line in follow_log(run_dir, client.log_offset, client.running):
        seen.append(line)
        if line == "tick 5":
            os.kill(client.pid, signal.SIGTERM)
    assert seen[0].startswith("$ ") and "tick 5" in seen and seen[-2] == "rank: saved"
    assert seen[-1] == "[ds-wizard supervisor] the job exited with code 0"


def test_a_second_launch_of_a_locked_run_is_refused_naming_the_holder(started) -> None:
    plan, client, run_dir = started
    with pytest.raises(DsWizardError, match=rf"already running .*supervisor pid {client.pid}"):
        start_supervisor(plan, detach=True)
    # the supervisor's own lock refuses too, even past the client-side check
    with pytest.raises(DsWizardError, match=rf"is in use: ds-wizard supervisor pid {client.pid}"):
        acquire_run_lock(run_dir, "test")
    import subprocess

    second = subprocess.run(supervisor_argv(run_dir, ["true"], 5), capture_output=True,
                            text=True, timeout=60)
    assert second.returncode == 1 and f"supervisor pid {client.pid}" in second.stderr
    assert read_run_state(run_dir).supervisor_pid == client.pid


def test_stop_ends_the_job_of_a_lost_supervisor(started) -> None:
    plan, client, run_dir = started
    wait_until(lambda: "tick 2" in plan.paths.log.read_text())
    os.kill(client.pid, signal.SIGKILL)
    client.proc.wait()
    wait_until(lambda: summarize_run(run_dir).status is RunStatus.LOST)
    lost = summarize_run(run_dir)
    assert lost.alive and len(lost.pids) == 3 and not lost.supervisor_alive
    out = CliRunner().invoke(main, ["runs", "--runs-dir", str(run_dir.parent)])
    assert "supervisor lost" in out.output
    # a resume is refused while its processes live
    with pytest.raises(DsWizardError, match="supervisor is lost"):
        start_supervisor(plan, detach=True)
    out = CliRunner().invoke(main, ["stop", run_dir.name[:14], "--runs-dir",
                                    str(run_dir.parent), "--grace", "20"])
    assert out.exit_code == 0, out.output
    assert "stopped" in out.output
    wait_until(lambda: no_process_of(run_dir), 10)
    after = summarize_run(run_dir)
    assert after.status is RunStatus.STOPPED and "supervisor was lost" in after.stop_reason


def test_stop_of_a_run_that_is_not_running_is_one_line(started) -> None:
    run_dir = started[2]
    stop_run(run_dir, now=True)
    out = CliRunner().invoke(main, ["stop", "latest", "--runs-dir", str(run_dir.parent)])
    assert out.exit_code == 1 and "is not running (stopped)" in out.output


def test_a_full_disk_stops_the_job_within_grace_naming_the_disk(tmp_path: Path) -> None:
    plan = fake_plan(tmp_path)
    log = plan.paths.log
    log.unlink(missing_ok=True)
    log.symlink_to("/dev/full")  # every write: ENOSPC
    lines: list[str] = []
    t0 = time.monotonic()
    client = start_supervisor(plan, grace_s=20, on_stderr=lines.append)
    try:
        code = client.proc.wait(timeout=40)
    finally:
        for pid in [*summarize_run(plan.paths.root).pids, client.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert time.monotonic() - t0 < 20 + 10
    assert code == 1
    time.sleep(0.3)
    # the supervisor says its reason once, in state.json, which the client prints at the end
    state = read_run_state(plan.paths.root)
    assert state.status == "failed", state
    assert "No space left on device" in state.stop_reason, state.stop_reason
    assert "the disk at /dev" in state.stop_reason, state.stop_reason
    assert not [line for line in lines if line.startswith("error:")], lines  # not twice
    assert no_process_of(plan.paths.root)


def test_resolve_run_ref_is_used_by_every_command(tmp_path: Path) -> None:
    out = CliRunner().invoke(main, ["attach", "nope", "--plain", "--runs-dir", str(tmp_path)])
    assert out.exit_code == 1 and "no run 'nope'" in out.output
    out = CliRunner().invoke(main, ["runs", "--runs-dir", str(tmp_path)])
    assert "no runs under" in out.output
    out = CliRunner().invoke(main, ["runs", "--json", "--runs-dir", str(tmp_path)])
    assert out.output.strip() == "[]"


def test_the_in_process_reader_survives_a_full_disk_and_signals_the_end(tmp_path: Path) -> None:
    """issue 15, fault 1: a log write that fails (ENOSPC) is reported once; the pipe keeps
    being drained (to memory and to the fallback) and the end is always signalled."""
    from ds_wizard.launch.supervisor import Supervisor

    log = tmp_path / "train.log"
    log.symlink_to("/dev/full")
    fallback: list[str] = []
    lines = 5000  # far more than a pipe holds: a dead reader would block the job
    sup = Supervisor([sys.executable, "-c", f"for i in range({lines}): print('line', i)"],
                     log_path=log, on_io_error_line=fallback.append).start()
    got = list(sup.lines())  # returns: the end-of-output marker was queued
    assert sup.wait(timeout=60) == 0
    assert len(got) == lines and got[-1] == f"line {lines - 1}"
    assert "No space left on device" in sup.io_error and "the disk at /dev" in sup.io_error
    assert fallback[-1] == f"line {lines - 1}" and sup.tail[-1] == got[-1]
