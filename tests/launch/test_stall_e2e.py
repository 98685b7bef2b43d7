"""Issue 22 for real: tiny_mamba on 2 CPU ranks through DeepSpeed, two runs in all.

1. ``--monitor tensorboard,csv --stall-after 3x,15s``: one rank is stopped with SIGSTOP
   after step 2. ``runs --json`` says stalled and names it; ``stalls/<time>/`` holds rank
   0's stack, rank 1's process state and a summary naming rank 1 the odd one out. After
   SIGCONT the run is running again and finishes with exit 0, the episode logged. Its
   TensorBoard events (read by tensorboard's own ``EventAccumulator``) hold
   ``Train/Samples/train_loss`` and ds-wizard's tokens/s for every logged step, and the
   CSV monitor wrote DeepSpeed's files.
2. ``--on-stall stop``: the same stop ends the run within the grace period with the
   autopsy saved, "no checkpoint could be taken" said, and no process left.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ds_wizard.core.runs import rundir
from ds_wizard.core.runs.metrics import read_metrics
from ds_wizard.core.runs.runstate import read_run_state
from ds_wizard.core.runs.stall import read_beats

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "ds_wizard.cli"]
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
START_TIMEOUT = 600
GRACE = 10.0


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def launch(runs_dir: Path, *extra: str) -> Path:
    out = cli("launch", "--preset", "tiny_mamba", "--steps", "8", "--set", "train.log_every=1",
              "--runs-dir", str(runs_dir), "--grace", str(GRACE), "--detach", *extra)
    assert out.returncode == 0, out.stdout + out.stderr
    return runs_dir / out.stdout.strip().splitlines()[-1]


def status(run_dir: Path) -> dict:
    out = cli("runs", "--json", "--runs-dir", str(run_dir.parent))
    assert out.returncode == 0, out.stderr
    return {r["name"]: r for r in json.loads(out.stdout)}[run_dir.name]


def wait_until(what: str, check, timeout: float, run_dir: Path) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(1.0)
    log = (run_dir / rundir.TRAIN_LOG).read_text()[-3000:]
    raise AssertionError(f"{what} not within {timeout} s\n{log}")


def stop_rank_1_after_step(run_dir: Path, step: int) -> int:
    wait_until(f"step {step}", lambda: (m := read_metrics(run_dir / rundir.METRICS))
               and m[-1]["step"] >= step, START_TIMEOUT, run_dir)
    pid = read_beats(run_dir)[1].pid
    os.kill(pid, signal.SIGSTOP)
    return pid


@contextlib.contextmanager
def cleanup(runs_dir: Path) -> Iterator[list[int]]:
    """Whatever the test ends with: stopped ranks resumed, every run stopped now."""
    stopped: list[int] = []
    try:
        yield stopped
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        for d in runs_dir.iterdir() if runs_dir.is_dir() else ():
            state = read_run_state(d)
            if state is not None and state.active:
                cli("stop", str(d), "--now", timeout=60)


def test_a_stopped_rank_is_a_stall_with_an_autopsy_and_the_run_recovers(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    with cleanup(runs_dir) as stopped:
        run_dir = launch(runs_dir, "--monitor", "tensorboard,csv", "--stall-after", "3x,15s")
        stopped.append(stop_rank_1_after_step(run_dir, 2))
        # the window is max(3 × median step, 15 s): the median grows on a loaded machine
        took = wait_until("stalled", lambda: status(run_dir)["status"] == "stalled", 900,
                          run_dir)
        row = status(run_dir)
        assert took <= row["stall_detail"]["threshold_s"] + 20  # the 1 s poll, `runs` calls
        assert row["stall"].startswith("stalled for ")
        # the headline's rank is the one with the oldest beat, which either rank can be when
        # both sit in the same step; the stopped rank is named once the autopsy has read
        # the processes ("odd one out: rank 1"), if not already as the one last in a phase
        wait_until("the line names rank 1", lambda: "rank 1" in (status(run_dir)["stall"] or ""),
                   60, run_dir)
        assert row["stall_detail"]["rank"] == 1
        wait_until("the autopsy", lambda: (status(run_dir)["stall_detail"] or {})
                   .get("autopsy"), 60, run_dir)
        autopsy = Path(status(run_dir)["stall_detail"]["autopsy"])
        assert autopsy.parent == run_dir / "stalls"
        rank0 = (autopsy / "rank-0.txt").read_text()
        assert "Thread" in rank0 and "ds_wizard/train/loop.py" in rank0  # py-spy's stack
        assert "process state stopped" in (autopsy / "rank-1.txt").read_text()
        summary = (autopsy / "summary.txt").read_text()
        assert "odd one out: rank 1 (its process is stopped" in summary
        os.kill(stopped.pop(), signal.SIGCONT)
        wait_until("running again", lambda: status(run_dir)["status"] == "running", 60,
                   run_dir)
        wait_until("the end", lambda: status(run_dir)["status"] == "finished", 900, run_dir)
        row = status(run_dir)
        assert row["exit_code"] == 0 and row["stall"] is None
        (episode,) = row["stall_episodes"]
        assert episode["rank"] == 1 and episode["end"] == "the ranks moved again"
        assert "the run moves again" in (run_dir / rundir.TRAIN_LOG).read_text()

    # the trackers, read by their own readers
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logged = read_metrics(run_dir / rundir.METRICS)
    assert [m["step"] for m in logged] == list(range(1, 9))
    cfg = json.loads((run_dir / rundir.CONFIG_JSON).read_text())
    samples_per_step = cfg["train_batch_size"]
    tb_dir = run_dir / "tensorboard" / run_dir.name
    assert row["trackers"] == {"tensorboard": str(tb_dir),
                               "csv": str(run_dir / "csv" / run_dir.name)}
    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    want = [m["step"] * samples_per_step for m in logged]
    loss = acc.Scalars("Train/Samples/train_loss")
    assert [e.step for e in loss] == want
    assert [round(e.value, 4) for e in loss] == [round(m["loss"], 4) for m in logged]
    tps = acc.Scalars("ds_wizard/tokens_per_s")
    assert [e.step for e in tps] == want and all(e.value > 0 for e in tps)
    assert acc.Scalars("ds_wizard/config/train_batch_size")[0].value == samples_per_step
    assert "Train/Samples/lr" in acc.Tags()["scalars"]  # DeepSpeed's own event
    csv_dir = run_dir / "csv" / run_dir.name
    for name in ("Train_Samples_train_loss.csv", "Train_Samples_lr.csv",
                 "ds_wizard_tokens_per_s.csv"):
        lines = (csv_dir / name).read_text().splitlines()
        assert lines[0].startswith("step,") and len(lines) >= 9, name


def test_on_stall_stop_ends_the_run_with_the_autopsy_and_no_process_left(
        tmp_path: Path) -> None:
    import psutil

    runs_dir = tmp_path / "runs"
    with cleanup(runs_dir) as stopped:
        run_dir = launch(runs_dir, "--stall-after", "2x,10s", "--on-stall", "stop")
        stopped.append(stop_rank_1_after_step(run_dir, 1))
        beats = read_beats(run_dir)
        wait_until("stalled", lambda: status(run_dir)["status"] in ("stalled", "failed"),
                   900, run_dir)
        took = wait_until("the end", lambda: status(run_dir)["status"] == "failed",
                          GRACE + 30, run_dir)
        assert took <= GRACE + 30
        row = status(run_dir)
    assert "ended by --on-stall stop" in row["stop_reason"]
    assert "no checkpoint could be taken" in row["stop_reason"]
    assert row["pids"] == [] and not row["supervisor_alive"]
    for b in beats.values():
        assert not psutil.pid_exists(b.pid) or psutil.Process(b.pid).status() == "zombie"
    (episode,) = row["stall_episodes"]
    autopsy = Path(episode["autopsy"])
    assert (autopsy / "summary.txt").is_file() and (autopsy / "rank-1.txt").is_file()
    assert "odd one out: rank 1" in (autopsy / "summary.txt").read_text()


def test_wandb_runs_offline_with_its_files_in_the_run_dir(tmp_path: Path) -> None:
    """Only where the wandb package is installed; it is not a dependency of ds-wizard."""
    pytest.importorskip("wandb", reason="wandb is not installed in this environment (it is "
                                        "optional: `pip install wandb` to test this tracker)")
    runs_dir = tmp_path / "runs"
    env = {k: v for k, v in ENV.items() if not k.startswith("WANDB_")}
    out = subprocess.run([*CLI, "launch", "--preset", "tiny_mamba", "--steps", "2",
                          "--set", "train.log_every=1", "--runs-dir", str(runs_dir),
                          "--monitor", "wandb"], capture_output=True, text=True,
                         env={**env, "WANDB_MODE": "offline"}, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    (run_dir,) = runs_dir.iterdir()
    offline = list((run_dir / "wandb").glob("**/offline-run-*"))
    assert offline, sorted(p.name for p in (run_dir / "wandb").rglob("*"))
