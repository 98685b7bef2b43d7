"""Issue 22, launch side without DeepSpeed ranks: the env a CUDA launch builds (NCCL's
flight recorder), the trackers a plan places, the supervisor's stall options, and the
autopsy against real (sleeping and stopped) processes."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.runs.runspec import Accelerator
from ds_wizard.core.runs.stall import Stall, StallPolicy, beat_bytes, heartbeat_path, read_beats
from ds_wizard.launch import plan as planning
from ds_wizard.launch.observe import observe_env, require_tracker_packages, stall_options
from ds_wizard.launch.plan import LaunchRequest
from ds_wizard.launch.stall import collect_autopsy, flight_recorder_env, py_spy
from ds_wizard.launch.stall_monitor import StallOptions
from ds_wizard.launch.supervisor import supervisor_argv

CUDA = Accelerator("cuda", 2, "2 test GPUs", True)
CPU = Accelerator("cpu", 0, "test")
FR_NAMES = {"TORCH_NCCL_TRACE_BUFFER_SIZE", "TORCH_FR_BUFFER_SIZE",
            "TORCH_NCCL_DUMP_ON_TIMEOUT", "TORCH_NCCL_DEBUG_INFO_TEMP_FILE",
            "TORCH_FR_DUMP_TEMP_FILE", "TORCH_NCCL_ASYNC_ERROR_HANDLING"}


def test_flight_recorder_names_are_the_installed_torchs() -> None:
    """The names each torch release reads: the Python side (distributed_c10d.py) and the
    C++ side (libtorch), so a rename in a newer torch fails here, not silently on a GPU."""
    import torch
    import torch.distributed.distributed_c10d as c10d

    py = Path(c10d.__file__).read_text(encoding="utf-8")
    assert "TORCH_FR_BUFFER_SIZE" in py and "TORCH_NCCL_TRACE_BUFFER_SIZE" in py
    lib = next(Path(torch.__file__).parent.joinpath("lib").glob("libtorch_cpu.*"))
    data = lib.read_bytes()
    for name in ("TORCH_FR_DUMP_TEMP_FILE", "TORCH_NCCL_DEBUG_INFO_TEMP_FILE",
                 "TORCH_NCCL_ASYNC_ERROR_HANDLING"):
        assert name.encode() in data, name


def test_a_cuda_launch_sets_the_flight_recorder_into_the_run_dir(tmp_path: Path,
                                                                  monkeypatch) -> None:
    for name in FR_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    plan = planning.prepare_run(LaunchRequest("tiny_mamba", 2, runs_dir=tmp_path,
                                              accelerator=CUDA, steps=3))
    env = plan.env
    assert set(env) >= FR_NAMES
    prefix = str(plan.paths.root.resolve() / "stalls" / "flight_recorder" / "nccl_trace_rank_")
    assert env["TORCH_NCCL_DEBUG_INFO_TEMP_FILE"] == env["TORCH_FR_DUMP_TEMP_FILE"] == prefix
    assert env["TORCH_NCCL_DUMP_ON_TIMEOUT"] == "1"
    assert env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "3"  # 1 would kill before the dump
    script = plan.paths.script.read_text()
    assert f"export TORCH_FR_DUMP_TEMP_FILE={shlex.quote(prefix)}" in script
    assert plan.stall == StallOptions(StallPolicy(10, 300), "wait", 2)
    cpu = planning.prepare_run(LaunchRequest("tiny_mamba", 2, runs_dir=tmp_path,
                                             accelerator=CPU, steps=3, stall_after="3x,15s",
                                             on_stall="stop"))
    assert not FR_NAMES & set(cpu.env)
    assert cpu.stall == StallOptions(StallPolicy(3, 15), "stop", 2)


def test_the_users_own_settings_win() -> None:
    env = flight_recorder_env(Path("/r"), {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
                                           "TORCH_FR_BUFFER_SIZE": "50"})
    assert "TORCH_NCCL_ASYNC_ERROR_HANDLING" not in env and "TORCH_FR_BUFFER_SIZE" not in env
    cfg = {"wandb": {"enabled": True}}
    got, notes = observe_env(cfg, Path("/r/x"), "cpu", {"WANDB_MODE": "online"})
    assert got == {"WANDB_NAME": "x", "WANDB_DIR": "/r/x/wandb"} and "online" in notes[0]


def test_a_tracker_whose_package_is_missing_is_refused_before_launch(monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    require_tracker_packages({"tensorboard": {"enabled": True}})
    with pytest.raises(DsWizardError) as err:
        require_tracker_packages({"wandb": {"enabled": True}})
    assert err.value.one_line() == ("the wandb tracker needs the wandb package, which is not "
                                    "installed (pip install wandb, or drop wandb from --monitor)")


def test_stall_options_reach_the_supervisor_and_back(tmp_path: Path) -> None:
    import argparse

    from ds_wizard.launch.stall_monitor import add_stall_arguments

    opts = stall_options("2x,30s", "stop", "cpu", 4)
    argv = supervisor_argv(tmp_path, ["deepspeed"], 5.0, stall=opts)
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--grace")
    add_stall_arguments(p)
    args = p.parse_args(argv[3:argv.index("--")])
    assert StallOptions.from_args(args) == opts
    assert stall_options("off", "wait", "cpu", 2) is None


def _sleeper(run_dir: Path, rank: int) -> subprocess.Popen:
    """A process that writes a heartbeat like a rank and then waits (a stand-in rank)."""
    code = ("import os, socket, sys, time\n"
            "from ds_wizard.core.runs.stall import beat_bytes, heartbeat_path\n"
            f"p = heartbeat_path({str(run_dir)!r}, {rank}); p.parent.mkdir(exist_ok=True)\n"
            "host = socket.gethostname().split('.')[0]\n"
            f"p.write_bytes(beat_bytes(5, 'backward', time.time(), os.getpid(), {rank}, host))\n"
            "def wait_in_collective():\n    time.sleep(120)\n"
            "print('ready', flush=True)\nwait_in_collective()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc


@pytest.mark.skipif(py_spy() is None, reason="py-spy is not installed")
def test_autopsy_reads_live_stacks_and_records_a_stopped_process(tmp_path: Path) -> None:
    procs = [_sleeper(tmp_path, r) for r in (0, 1)]
    try:
        os.kill(procs[1].pid, signal.SIGSTOP)
        time.sleep(0.3)
        beats = read_beats(tmp_path)
        # a rank on another node: its heartbeat arrives through a shared file system
        other = beat_bytes(4, "forward", time.time(), 99999, 0, "node-b")
        heartbeat_path(tmp_path, 2).write_bytes(other)
        beats = read_beats(tmp_path)
        stall = Stall(since=time.time() - 90, threshold_s=60, rank=1, host=beats[1].host,
                      phase="backward", step=5)
        where, summary = collect_autopsy(tmp_path, beats, stall)
    finally:
        for p in procs:
            os.kill(p.pid, signal.SIGCONT)
            p.kill()
            p.wait()
    assert where.parent == tmp_path / "stalls"
    rank0 = (where / "rank-0.txt").read_text()
    assert "wait_in_collective" in rank0 and "process state sleeping" in rank0
    rank1 = (where / "rank-1.txt").read_text()
    assert "process state stopped" in rank1 and "py-spy cannot read a stopped process" in rank1
    assert not (where / "rank-2.txt").exists()
    assert summary.odd_rank == 1 and summary.not_examined == ["node node-b"]
    text = (where / "summary.txt").read_text()
    assert "odd one out: rank 1 (its process is stopped" in text
    assert "not examined (py-spy reads only this node's processes): node node-b" in text
    data = json.loads((where / "summary.json").read_text())
    assert data["odd_rank"] == 1 and {r["rank"]: r["state"] for r in data["ranks"]} == {
        0: "sleeping", 1: "stopped", 2: None}


def test_the_watch_ignores_the_beats_of_an_earlier_launch(tmp_path: Path) -> None:
    """A resumed run starts with the last launch's heartbeats on disk: they must not arm
    the watch while this launch's ranks are still starting."""
    from ds_wizard.launch.stall import StallWatch

    heartbeat_path(tmp_path, 0).parent.mkdir()
    for r in (0, 1):
        heartbeat_path(tmp_path, r).write_bytes(
            beat_bytes(40, "checkpoint", time.time() - 3600, 1, r, "a"))
    watch = StallWatch(tmp_path, StallPolicy(1, 1), expected_ranks=2, every_s=0)
    assert watch.poll(now=time.time() + 10) is None and watch.beats == {}
    assert watch.tracker.last_progress is None
    for r in (0, 1):
        heartbeat_path(tmp_path, r).write_bytes(beat_bytes(41, "data", time.time(), 1, r, "a"))
    assert watch.poll() is None and set(watch.beats) == {0, 1}
    assert watch.poll(now=time.time() + 5) == "stalled"
