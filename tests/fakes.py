"""Fakes shared by every test package: a machine with no GPU or four, the seed config, the
real CLI in a fresh interpreter, NVML probes and a scripted job for the TUI, an isolated
environment.

The TUI fakes go in through ``make_app(...)`` — the same door the CLI uses — never by
patching ds_wizard.core.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from ds_wizard.core.base.system import pid_alive
from ds_wizard.core.plan.gpus import GpuInfo, GpuInventory

SEED_CONFIG = {
    "train_batch_size": 16,
    "train_micro_batch_size_per_gpu": 4,
    "gradient_accumulation_steps": 8,
    "gradient_clipping": 1.0,
    "zero_optimization": {"stage": 2, "overlap_comm": True},
    "bf16": {"enabled": True},
    "optimizer": {"type": "AdamW", "params": {"lr": 0.0006}},
}
NO_GPU = GpuInventory(reason="no NVIDIA driver or GPU found (test)")
FOUR_A100 = GpuInventory(
    [GpuInfo(i, i, "NVIDIA A100-SXM4-80GB", 80 * 2**30, (8, 0), f"GPU-{i}") for i in range(4)],
    driver_version="550.54",
)
TWO_V100 = GpuInventory(
    [GpuInfo(i, i, "Tesla V100-SXM2-32GB", 32 * 2**30, (7, 0), f"GPU-{i}") for i in range(2)],
    driver_version="535.00",
)


def write_seed(directory: Path, name: str = "deepspeed_config.json") -> Path:
    path = directory / name
    path.write_text(json.dumps(SEED_CONFIG, indent=4) + "\n", encoding="utf-8")
    return path


def patch_gpus(monkeypatch: pytest.MonkeyPatch, report: GpuInventory,
               kernels: bool = True) -> None:
    """Every detect_gpus the CLI can reach returns ``report``.

    ``kernels``: whether mamba-ssm's kernels count as installed, as on a GPU machine set
    up with the [gpu] extra; the backend the planner assumes for "auto" depends on it.
    """
    import ds_wizard.commands.gpus
    import ds_wizard.core.plan.backends
    import ds_wizard.core.plan.gpus

    monkeypatch.setattr(ds_wizard.core.plan.backends, "_module_found", lambda m: kernels)
    monkeypatch.setattr(ds_wizard.core.plan.gpus, "detect_gpus", lambda *a, **k: report)
    monkeypatch.setattr(ds_wizard.commands.gpus, "detect_gpus", lambda *a, **k: report)


CLI = (sys.executable, "-m", "ds_wizard.cli")


def cli_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """A CLI subprocess's environment: this one, with CPU ranks even on a GPU machine."""
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", **(env or {})}


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess:
    """The real console entry point in a fresh interpreter, run to its end (exit codes, no
    traceback); output captured as text unless ``stdout``/``stderr`` say otherwise."""
    if "stdout" not in kw and "stderr" not in kw:
        kw["capture_output"] = True
    return subprocess.run([*CLI, *args], cwd=cwd, env=cli_env(env), text=True,
                          timeout=timeout, **kw)


def start_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
              **kw: Any) -> subprocess.Popen:
    """The entry point started in its own session (a failing test can still kill whatever
    is left), stdout and stderr merged as text unless ``kw`` says otherwise."""
    options: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT,
                               "text": True, "start_new_session": True, **kw}
    return subprocess.Popen([*CLI, *args], cwd=cwd, env=cli_env(env), **options)


def gpu_probe(count: int = 4, name: str = "NVIDIA H200", memory_mib: int = 143771,
              cc: tuple[int, int] = (9, 0), cvd: str | None = None):
    """A GPU probe returning what NVML would report for ``count`` identical GPUs."""

    def probe() -> GpuInventory:
        gpus = [GpuInfo(i, i, name, memory_mib * 2**20, cc, f"GPU-fake-{i}") for i in range(count)]
        return GpuInventory(gpus, "550.54.15", None if gpus else "no NVIDIA driver or GPU found",
                         cvd)

    return probe


def no_gpus() -> GpuInventory:
    return GpuInventory([], None, "no NVIDIA driver or GPU found (NVML: Driver Not Loaded)", None)


def isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with no local, team or user presets: only the built-in ones."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("DS_WIZARD_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("DS_WIZARD_PRESET_PATH", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.chdir(work)
    return work


FAKE_TRAINER = textwrap.dedent(
    """
    import json, signal, sys, time
    run_dir, steps, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    stop = False
    def on_signal(signum, frame):
        global stop
        stop = True
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print("[fake] starting", flush=True)
    with open(run_dir + "/metrics.jsonl", "a") as m:
        for step in range(1, steps + 1):
            if stop:
                print("[fake] stop requested: checkpoint saved", flush=True)
                sys.exit(130)
            loss = 5.0 / step
            print(f"step {step} loss {loss:.4f}", flush=True)
            m.write(json.dumps({"step": step, "loss": loss, "tokens_per_s": 1000.0 * step,
                                "elapsed_s": float(step)}) + "\\n")
            m.flush()
            time.sleep(0.05 if steps < 50 else 0.2)
    while mode == "hold" and not stop:  # steady state, for screenshots
        time.sleep(0.05)
    if stop:
        print("[fake] stop requested: checkpoint saved", flush=True)
        sys.exit(130)
    if mode == "fail":
        print("RuntimeError: CUDA out of memory (fake)", file=sys.stderr, flush=True)
        sys.exit(3)
    print("[fake] done", flush=True)
    """
)


def script_job_factory(tmp_path: Path, steps: int = 5, fail: bool = False, hold: bool = False):
    """A job factory for the launch screen: a fake trainer under the real Supervisor."""
    from ds_wizard.launch.supervisor import Supervisor

    jobs: list[Supervisor] = []

    def factory(state) -> Supervisor:
        run_dir = tmp_path / f"run{len(jobs)}"
        run_dir.mkdir()
        script = run_dir / "fake_train.py"
        script.write_text(FAKE_TRAINER)
        argv = [sys.executable, str(script), str(run_dir), str(steps),
                "fail" if fail else "hold" if hold else "ok"]
        job = Supervisor(argv, run_dir=run_dir).start()
        jobs.append(job)
        return job

    factory.jobs = jobs  # type: ignore[attr-defined]
    return factory


async def wait_for(pilot, condition, timeout: float = 30.0) -> None:
    """Let the app run until ``condition()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await pilot.pause(0.1)


def process_tree(proc: subprocess.Popen[str]) -> set[int]:
    """``proc`` and every process below it, while they exist."""
    import psutil

    try:
        return {proc.pid} | {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def alive(pids: set[int]) -> list[int]:
    """The pids that still run (a zombie is dead for our purposes)."""
    return [pid for pid in pids if pid_alive(pid)]


def kill_leftovers(proc: subprocess.Popen[str], pids: set[int]) -> None:
    """Kill the process groups of whatever a failed real-run test left, then reap ``proc``."""
    import signal

    for pid in alive(pids | process_tree(proc)):
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
    proc.wait(timeout=30)


TRAINED_STEPS = 30  # the steps of the session's shared run (conftest.trained)


def copy_run(run_dir: Path, runs_dir: Path) -> Path:
    """A copy of a finished run in ``runs_dir``, for a test that changes it (resumes it,
    damages it) while the session's shared run stays as trained."""
    import shutil

    runs_dir.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copytree(run_dir, runs_dir / run_dir.name, symlinks=True))


def train_tiny_mamba(runs_dir: Path, steps: int, timeout: float) -> tuple[Path, str, int]:
    """``ds-wizard launch --preset tiny_mamba --steps N`` on 2 CPU ranks, to the end:
    (the run directory, the output, the exit code). Nothing is left running."""
    from ds_wizard.core.runs import rundir

    proc = start_cli("launch", "--preset", "tiny_mamba", "--steps", str(steps),
                     "--runs-dir", str(runs_dir))
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        kill_leftovers(proc, set())
    found = rundir.list_runs(runs_dir)
    assert len(found) == 1, (found, out)
    return found[0], out, proc.returncode
