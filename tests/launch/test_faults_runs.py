"""Issue 15, faults 5, 6 and 7 on real training runs: `ds-wizard launch` → deepspeed → 2
CPU ranks (gloo), tiny_mamba, no mocks.

One run is shared by the module, in three acts (each test needs the one before):

1. fault 6: the run is launched with the issue's config, ``{"train_micro_batch_size_per_gpu":
   4}``, which has no optimizer block (it used to pass ``check`` and ``--dry-run`` and then
   crash both ranks at step 1). ds-wizard supplies the preset's optimizer and says so; the
   run trains until a rank is SIGKILLed after step 5 (a crash), and a torn line is left at
   the end of metrics.jsonl (what a kill mid-write or a full disk leaves).
2. fault 7: ``--resume`` continues from the last complete checkpoint (step 4); the records
   of step 5 and the torn line are cut, so no step appears twice.
3. faults 5 and 7: the newest tag (6) gets a planted pickle of exactly the recorded size
   (only the SHA-256 can tell) and the one before (4) a truncated file (its size tells).
   Resume refuses both before anything is loaded, says why, and continues from step 2.
   The planted ``__reduce__`` would create a file; it never exists.
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
from _fault_helpers import planted_pickle
from fakes import alive, kill_leftovers, process_tree, start_cli

from ds_wizard.core.runs import rundir
from ds_wizard.core.runs.metrics import read_metrics
from ds_wizard.launch.supervisor import is_rank_cmdline

pytestmark = pytest.mark.slow

START_TIMEOUT = 900  # a fresh machine JIT-builds DeepSpeed's shm op on the first launch
MODEL = "mp_rank_00_model_states.pt"  # ZeRO 0: weights and optimizer state, one file
TORN = '{"step": 6, "loss": 3.1'


def _launch(*args: str, runs_dir: Path) -> subprocess.Popen[str]:
    # CPU ranks even on a machine with GPUs: these tests are about the 2-CPU-rank run
    return start_cli("launch", *args, "--runs-dir", str(runs_dir))


def _finish(proc: subprocess.Popen[str]) -> str:
    pids = process_tree(proc)
    try:
        out, _ = proc.communicate(timeout=START_TIMEOUT)
    finally:
        kill_leftovers(proc, pids)
    assert not alive(pids), alive(pids)
    return out


def _steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in read_metrics(run_dir / rundir.METRICS)]


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Act 1: a run on the optimizer-less config, killed (SIGKILL of a rank) after step 5."""
    runs_dir = tmp_path_factory.mktemp("runs")
    config = runs_dir.parent / "micro_only.json"
    config.write_text('{"train_micro_batch_size_per_gpu": 4}\n')
    proc = _launch("--preset", "tiny_mamba", "--config", str(config), "--steps", "40",
                   "--set", "train.save_every=2", runs_dir=runs_dir)
    pids: set[int] = set()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        run_dir = None
        while time.monotonic() < deadline:
            found = rundir.list_runs(runs_dir)
            run_dir = found[0] if found else None
            if run_dir is not None and len(_steps(run_dir)) >= 5:
                break
            assert proc.poll() is None, f"launch exited early: {proc.stdout.read()}"
            time.sleep(0.2)
        else:
            raise AssertionError("no 5 logged steps in time")
        pids = process_tree(proc)
        ranks = [p for p in pids if is_rank_cmdline(psutil.Process(p).cmdline())]
        assert len(ranks) == 2
        os.kill(max(ranks), signal.SIGKILL)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode != 0, out
    finally:
        kill_leftovers(proc, pids)
    assert not alive(pids)
    assert config.read_text() == '{"train_micro_batch_size_per_gpu": 4}\n'  # untouched
    with (run_dir / rundir.METRICS).open("a") as fh:
        fh.write(TORN)  # no newline: cut off mid-record
    return run_dir, out


def test_fault6_config_without_optimizer_gets_the_presets_and_trains(
    crashed: tuple[Path, str],
) -> None:
    run_dir, out = crashed
    assert "has no optimizer block: using the preset's AdamW (lr 0.003" in out
    cfg = json.loads((run_dir / rundir.CONFIG_JSON).read_text())
    assert cfg["optimizer"]["type"] == "AdamW" and cfg["gradient_accumulation_steps"] == 1
    steps = _steps(run_dir)
    assert steps[:5] == [1, 2, 3, 4, 5]  # past step 1: no crash
    assert "training failed" in out and "SIGKILL" in out


def test_fault7_resume_after_a_crash_repeats_no_step(crashed: tuple[Path, str]) -> None:
    run_dir, _ = crashed
    last = rundir.latest_complete(run_dir / rundir.CHECKPOINTS).step
    logged = _steps(run_dir)
    assert logged[-1] > last  # the crash left records past the checkpoint
    assert (run_dir / rundir.METRICS).read_text().endswith(TORN)
    proc = _launch("--resume", str(run_dir), "--steps", str(last + 2),
                   runs_dir=run_dir.parent)
    out = _finish(proc)
    assert proc.returncode == 0, out
    assert f"resumed from {rundir.checkpoint_tag(last)}: continuing at step {last + 1}" in out
    assert "removed a cut-off last line" in out
    assert "logged after the checkpoint this run continues from" in out
    assert _steps(run_dir) == list(range(1, last + 3))
    text = (run_dir / rundir.METRICS).read_text()
    assert text.endswith("\n") and all(json.loads(line) for line in text.splitlines())
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]


def test_fault5_and_7_tampered_and_truncated_tags_are_refused_before_loading(
    crashed: tuple[Path, str],
) -> None:
    run_dir, _ = crashed
    ckpt = run_dir / rundir.CHECKPOINTS
    tags = [c for c in rundir.scan_checkpoints(ckpt) if c.complete]
    assert len(tags) >= 3, tags
    newest, before, fallback = tags[-1], tags[-2], tags[-3]
    canary = run_dir.parent / "planted-code-ran"
    target = newest.path / MODEL
    target.write_bytes(planted_pickle(canary, target.stat().st_size))  # same size
    shard = before.path / MODEL
    with shard.open("r+b") as fh:
        fh.truncate(shard.stat().st_size // 2)
    total = newest.step + 1
    proc = _launch("--resume", str(run_dir), "--steps", str(total), runs_dir=run_dir.parent)
    out = _finish(proc)
    assert not canary.exists(), "the planted pickle was loaded"
    assert proc.returncode == 0, out
    assert (f"checkpoint {newest.tag} is damaged and will not be loaded: {MODEL} does not "
            "match the SHA-256") in out
    assert f"checkpoint {before.tag} is damaged and will not be loaded: {MODEL} has" in out
    assert f"resumed from {fallback.tag}: continuing at step {fallback.step + 1}" in out
    assert _steps(run_dir) == list(range(1, total + 1))
    # the tags trained again were written afresh and verify
    again = {c.tag: c for c in rundir.scan_checkpoints(ckpt)}
    assert rundir.check_checkpoint(again[newest.tag]) == []
    assert rundir.check_checkpoint(again[before.tag]) == []
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]  # no temp file left
