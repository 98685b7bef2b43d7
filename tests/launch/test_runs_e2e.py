"""Runs that outlive their client, for real: tiny_mamba on 2 CPU ranks through DeepSpeed.

One run directory goes through the three ways a client is lost (issue 12):
  1. ``launch --detach`` from a process that then exits;
  2. ``kill -9`` of a TUI (``ds-wizard attach``, in a pseudo-terminal) that shows it;
  3. SIGHUP to the process group of a foreground ``launch --resume`` (a dropped SSH session).
Each time ``runs`` shows it running, ``attach --plain`` shows new log lines, ``stop`` ends it
with a checkpoint and no process left, and the resume continues at the next step with the
losses of an uninterrupted run. Also: the lock refuses a second resume naming the holder,
and a full disk (a 20 MiB tmpfs) ends a launch within the grace period naming the disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path

import pytest
from fakes import run_cli, start_cli

from ds_wizard.core.base.system import pid_alive
from ds_wizard.core.runs import rundir
from ds_wizard.core.runs.metrics import read_metrics
from ds_wizard.core.runs.runstate import list_run_summaries, summarize_run

pytestmark = pytest.mark.slow

START_TIMEOUT = 600  # a fresh machine JIT-builds DeepSpeed's shm op on the first launch
REFERENCE_STEPS = 16


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=timeout)


def popen(*args: str) -> subprocess.Popen[str]:
    return start_cli(*args)


def steps_of(run_dir: Path) -> list[dict]:
    return read_metrics(run_dir / rundir.METRICS)


def wait_for_step(run_dir: Path, step: int, timeout: float = START_TIMEOUT,
                  client: subprocess.Popen[str] | None = None) -> None:
    """Until ``step`` is logged; the run (or the ``client`` still starting it) must live."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logged = steps_of(run_dir)
        if logged and logged[-1]["step"] >= step:
            return
        alive = client.poll() is None if client is not None else summarize_run(run_dir).alive
        assert alive, (run_dir / rundir.TRAIN_LOG).read_text()[-3000:]
        time.sleep(0.5)
    raise AssertionError(f"step {step} not logged within {timeout} s")


def status_json(runs_dir: Path, name: str) -> dict:
    out = cli("runs", "--json", "--runs-dir", str(runs_dir))
    assert out.returncode == 0, out.stderr
    return {r["name"]: r for r in json.loads(out.stdout)}[name]


def assert_running_and_growing(runs_dir: Path, run_dir: Path) -> None:
    """``runs`` says running, and ``attach --plain`` shows a log line written after it
    started."""
    assert status_json(runs_dir, run_dir.name)["status"] == "running"
    proc = popen("attach", run_dir.name, "--plain", "-n", "0", "--runs-dir", str(runs_dir))
    seen: list[str] = []
    last = steps_of(run_dir)[-1]["step"]
    try:
        deadline = time.monotonic() + 180
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if re.match(rf"step\s+{last + 1}/", line.strip()) or time.monotonic() > deadline:
                break
    finally:
        proc.send_signal(signal.SIGINT)  # leaving attach never stops the run
        rest, _ = proc.communicate(timeout=30)
    assert any(re.match(rf"step\s+{last + 1}/", s.strip()) for s in seen), seen[-5:]
    assert "goes on running" in rest
    assert status_json(runs_dir, run_dir.name)["status"] == "running"


def stop_with_checkpoint(runs_dir: Path, run_dir: Path) -> int:
    pids = summarize_run(run_dir).pids
    out = cli("stop", run_dir.name, "--runs-dir", str(runs_dir), timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "stopped" in out.stdout
    summary = summarize_run(run_dir)
    assert summary.status.value == "stopped" and not summary.pids
    assert not [p for p in pids if pid_alive(p)]
    latest = rundir.latest_complete(run_dir / rundir.CHECKPOINTS)
    assert latest is not None and latest.step == steps_of(run_dir)[-1]["step"]
    return latest.step


def assert_same_losses(run_dir: Path, reference: dict[int, float], steps: range) -> None:
    got = {r["step"]: r["loss"] for r in steps_of(run_dir)}
    for step in steps:
        assert step in reference, f"the reference run has no step {step}"
        assert got[step] == pytest.approx(reference[step], abs=1e-5), (step, got, reference)


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("runs")
    yield d
    for s in list_run_summaries(d):  # only when a test failed half-way
        if s.alive:
            cli("stop", str(s.run_dir), "--now", "--runs-dir", str(d))


@pytest.fixture(scope="module")
def reference(runs_dir: Path) -> dict[int, float]:
    """An uninterrupted run's losses, step by step."""
    ref_dir = runs_dir.parent / "reference"
    out = cli("launch", "--preset", "tiny_mamba", "--steps", str(REFERENCE_STEPS),
              "--runs-dir", str(ref_dir), timeout=START_TIMEOUT + 600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (run_dir,) = rundir.list_runs(ref_dir)
    return {r["step"]: r["loss"] for r in steps_of(run_dir)}


def tui_in_a_pty(*args: str) -> tuple[subprocess.Popen[bytes], list[bytes]]:
    """Start the TUI on a pseudo-terminal (80×24); its screen output is collected."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = start_cli(*args, stdin=slave, stdout=slave, stderr=slave, text=False,
                     env={"TERM": "xterm-256color"})
    os.close(slave)
    screen: list[bytes] = []

    def drain() -> None:
        with contextlib.suppress(OSError):
            while chunk := os.read(master, 65536):
                screen.append(chunk)

    threading.Thread(target=drain, daemon=True).start()
    return proc, screen


def test_a_run_outlives_every_kind_of_lost_client(runs_dir: Path,
                                                  reference: dict[int, float]) -> None:
    # 1. launch --detach from a process that exits at once: it returned while the run
    # goes on (asserted below), whatever the time it took on this machine
    out = cli("launch", "--preset", "tiny_mamba", "--steps", "200", "--detach",
              "--runs-dir", str(runs_dir), timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    name = out.stdout.strip().splitlines()[-1]
    run_dir = runs_dir / name
    assert run_dir.is_dir(), out.stdout
    wait_for_step(run_dir, 2)
    assert_running_and_growing(runs_dir, run_dir)

    # 2. kill -9 of the TUI while it shows the run
    tui, screen = tui_in_a_pty("attach", name, "--runs-dir", str(runs_dir))
    try:
        deadline = time.monotonic() + 120
        while b"Running" not in b"".join(screen) and time.monotonic() < deadline:
            assert tui.poll() is None, b"".join(screen)[-2000:]
            time.sleep(0.5)
        assert b"Running" in b"".join(screen), b"".join(screen)[-2000:]
    finally:
        tui.kill()
        tui.wait(timeout=30)
    assert_running_and_growing(runs_dir, run_dir)
    first_stop = stop_with_checkpoint(runs_dir, run_dir)

    # 3. SIGHUP to a foreground launch --resume's process group
    client = popen("launch", "--resume", name, "--steps", "200", "--runs-dir", str(runs_dir))
    try:
        wait_for_step(run_dir, first_stop + 2, client=client)
        assert_same_losses(run_dir, reference, range(first_stop + 1, first_stop + 3))
        # the lock: a second resume of the running directory is refused, naming the holder
        second = cli("launch", "--resume", name, "--runs-dir", str(runs_dir))
        holder = summarize_run(run_dir).supervisor_pid
        assert second.returncode == 1 and f"supervisor pid {holder}" in second.stderr, \
            second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        os.killpg(client.pid, signal.SIGHUP)
        said, _ = client.communicate(timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == 0, said[-2000:]
    assert "detached" in said and f"ds-wizard attach {name}" in said
    assert_running_and_growing(runs_dir, run_dir)
    second_stop = stop_with_checkpoint(runs_dir, run_dir)

    # and it resumes once more, at the next step, with the uninterrupted run's loss
    last = cli("launch", "--resume", name, "--steps", str(second_stop + 1),
               "--runs-dir", str(runs_dir), timeout=START_TIMEOUT)
    assert last.returncode == 0, last.stdout[-2000:] + last.stderr[-2000:]
    assert [r["step"] for r in steps_of(run_dir)][-1] == second_stop + 1
    assert_same_losses(run_dir, reference, range(second_stop + 1, second_stop + 2))
    assert status_json(runs_dir, name)["status"] == "finished"


def test_a_full_disk_ends_the_launch_within_grace_naming_the_disk(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        grace = 60
        # --no-doctor: the doctor would refuse this 20 MB disk before any rank starts (one
        # checkpoint does not fit); this test is about a disk that fills during the run
        proc = popen("launch", "--preset", "tiny_mamba", "--steps", "30", "--grace",
                     str(grace), "--no-doctor", "--runs-dir", str(disk / "runs"))
        try:
            out, _ = proc.communicate(timeout=START_TIMEOUT + grace)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        assert proc.returncode == 1, out[-3000:]
        error = [ln for ln in out.splitlines() if ln.startswith("error: ")]
        assert error and f"the disk at {disk}" in error[-1] and "tmpfs" in error[-1], out[-3000:]
        (run_dir,) = rundir.list_runs(disk / "runs")
        assert not summarize_run(run_dir).pids
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
