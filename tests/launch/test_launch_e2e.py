"""Real training runs: `ds-wizard launch` → the deepspeed launcher → 2 CPU ranks (gloo).

No mocks. One 30-step run (the session's ``trained`` fixture, tests/launch/conftest.py) is
read by the training tests; the resume test works on a copy, and the stop tests each start
their own run and end it early. Every test leaves no process behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from fakes import TRAINED_STEPS, alive, copy_run, kill_leftovers, process_tree, start_cli

from ds_wizard.core.runs import rundir
from ds_wizard.core.runs.metrics import read_metrics
from ds_wizard.launch.supervisor import is_rank_cmdline

pytestmark = pytest.mark.slow

STEPS = TRAINED_STEPS
START_TIMEOUT = 600  # CPU ranks compile nothing now, but a busy 2-core machine is slow


def _launch(*args: str, runs_dir: Path) -> subprocess.Popen[str]:
    # CPU ranks even on a machine with GPUs: these tests are about the 2-CPU-rank run
    return start_cli("launch", *args, "--runs-dir", str(runs_dir))


def _only_run(runs_dir: Path) -> Path:
    found = rundir.list_runs(runs_dir)
    assert len(found) == 1, found
    return found[0]


def _wait_for_steps(run_dir_of, n: int, proc: subprocess.Popen[str],
                    timeout: float = START_TIMEOUT) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run_dir = run_dir_of()
        if run_dir is not None and len(read_metrics(run_dir / rundir.METRICS)) >= n:
            return run_dir
        assert proc.poll() is None, f"launch exited early: {proc.stdout.read()}"
        time.sleep(0.5)
    raise AssertionError(f"no {n} logged steps within {timeout} s")


def _first_run(runs_dir: Path):
    def get() -> Path | None:
        found = rundir.list_runs(runs_dir)
        return found[0] if found else None
    return get


def test_two_cpu_ranks_train_and_the_loss_falls(trained: tuple[Path, str, int]) -> None:
    run_dir, out, code = trained
    assert code == 0, out
    assert "running 2 CPU ranks" in out
    assert "--num_accelerators=2" in (run_dir / rundir.COMMAND_TXT).read_text()
    records = read_metrics(run_dir / rundir.METRICS)
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))  # log_every = 1
    losses = [r["loss"] for r in records]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 1.0, losses
    for r in records:
        assert r["tokens_per_s"] > 0 and r["samples_per_s"] > 0 and r["grad_norm"] is not None
    latest = rundir.latest_complete(run_dir / rundir.CHECKPOINTS)
    assert latest is not None and latest.step == STEPS
    assert (latest.path / "mp_rank_00_model_states.pt").is_file()
    assert "training finished" in out


def test_final_weights_load_with_from_pretrained(trained: tuple[Path, str, int]) -> None:
    from transformers import MambaForCausalLM

    run_dir, out, code = trained
    assert code == 0, out
    model = MambaForCausalLM.from_pretrained(run_dir / rundir.FINAL)
    assert model.config.hidden_size == 384 and model.config.vocab_size == 256


def test_resume_continues_at_the_next_step_with_the_trained_state(
    trained: tuple[Path, str, int], tmp_path: Path,
) -> None:
    shared_dir, out, code = trained
    assert code == 0, out
    run_dir = copy_run(shared_dir, tmp_path / "runs")  # the shared run stays as trained
    before = read_metrics(run_dir / rundir.METRICS)
    proc = _launch("--resume", str(run_dir), "--steps", str(STEPS + 2),
                   runs_dir=run_dir.parent)
    try:
        out2, _ = proc.communicate(timeout=START_TIMEOUT)
    finally:
        kill_leftovers(proc, set())
    assert proc.returncode == 0, out2
    after = read_metrics(run_dir / rundir.METRICS)[len(before):]
    assert [r["step"] for r in after] == [STEPS + 1, STEPS + 2]
    initial, last_before, first_after = before[0]["loss"], before[-1]["loss"], after[0]["loss"]
    # fresh weights would score near the initial loss; restored ones near the last loss
    assert abs(first_after - last_before) < 0.25 * abs(first_after - initial), (
        initial, last_before, first_after)
    assert f"resumed from {rundir.checkpoint_tag(STEPS)}" in out2
    assert rundir.latest_complete(run_dir / rundir.CHECKPOINTS).step == STEPS + 2


def test_sigint_saves_a_checkpoint_and_leaves_no_process(tmp_path: Path) -> None:
    proc = _launch("--preset", "tiny_mamba", "--steps", "500", runs_dir=tmp_path)
    pids: set[int] = set()
    try:
        run_dir = _wait_for_steps(_first_run(tmp_path), 2, proc)
        pids = process_tree(proc)
        assert len(pids) >= 4  # ds-wizard, deepspeed runner, launch.py, 2 ranks
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 128 + signal.SIGINT, out
        assert not alive(pids), alive(pids)
        latest = rundir.latest_complete(run_dir / rundir.CHECKPOINTS)
        logged = read_metrics(run_dir / rundir.METRICS)
        assert latest is not None and latest.step == logged[-1]["step"] >= 2
        assert "stopped" in out and "--resume" in out
    finally:
        kill_leftovers(proc, pids)


def test_sigkill_of_one_rank_ends_the_job_with_a_clear_error(tmp_path: Path) -> None:
    proc = _launch("--preset", "tiny_mamba", "--steps", "500", runs_dir=tmp_path)
    pids: set[int] = set()
    try:
        _wait_for_steps(_first_run(tmp_path), 1, proc)
        pids = process_tree(proc)
        ranks = [p for p in pids if is_rank_cmdline(psutil.Process(p).cmdline())]
        assert len(ranks) == 2
        victim = max(ranks)
        os.kill(victim, signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)  # the bound: ended within 60 s
        assert proc.returncode != 0, out
        assert "training failed" in out and "SIGKILL" in out, out[-3000:]
        assert not alive(pids), alive(pids)
    finally:
        kill_leftovers(proc, pids)


def test_no_step_at_lr_0_no_scheduler_warning_no_op_build(
        trained: tuple[Path, str, int]) -> None:
    run_dir, out, code = trained
    assert code == 0, out
    assert all(r["lr"] > 0 for r in read_metrics(run_dir / rundir.METRICS))
    assert "before it has started" not in out
    # torch's AdamW and gloo: CPU ranks compile no DeepSpeed op, even on a fresh machine
    assert "built successfully" not in out and "Building extension" not in out
    cfg = json.loads((run_dir / "ds_config.json").read_text())
    assert cfg["optimizer"]["params"]["torch_adam"] is True


def test_metrics_lines_are_json_objects(trained: tuple[Path, str, int]) -> None:
    run_dir, _, _ = trained
    for line in (run_dir / rundir.METRICS).read_text().splitlines():
        record = json.loads(line)
        assert {"step", "loss", "lr", "grad_norm", "tokens_per_s", "samples_per_s",
                "elapsed_s"} <= set(record)
