"""Run directories, launcher commands, checkpoint completeness, metrics tailing and the
process supervisor: all without DeepSpeed (fast)."""

from __future__ import annotations

import json
import shlex
import sys
import time
from datetime import datetime
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from ds_wizard.cli import main
from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.runs import rundir
from ds_wizard.core.runs.metrics import read_new_metrics
from ds_wizard.core.runs.runspec import Accelerator
from ds_wizard.launch import command, supervisor
from ds_wizard.launch import plan as planning
from ds_wizard.launch.plan import LaunchRequest

CPU = Accelerator("cpu", 0, "no GPU in this test")
CUDA = Accelerator("cuda", 4, "4 test GPUs", True)
BROKEN = {"train_batch_size": 16, "train_micro_batch_size_per_gpu": 4,
          "gradient_accumulation_steps": 8}


def test_prepare_run_writes_the_run_directory(tmp_path: Path) -> None:
    plan = planning.prepare_run(LaunchRequest("tiny_mamba", None, steps=7, runs_dir=tmp_path,
                                accelerator=CPU, master_port=29999))
    assert plan.world_size == 2 and any("running 2 CPU ranks" in n for n in plan.notes)
    paths = plan.paths
    assert paths.root.parent == tmp_path and paths.root.name.startswith("tiny_mamba-")
    for f in (paths.config, paths.preset, paths.command, paths.script, paths.run_json):
        assert f.is_file(), f
    assert paths.checkpoints.is_dir()
    cfg = json.loads(paths.config.read_text())
    assert cfg["train_batch_size"] == (cfg["train_micro_batch_size_per_gpu"]
                                       * cfg["gradient_accumulation_steps"] * 2)
    from ds_wizard.core.presets.lookup import read_preset_file

    assert read_preset_file(paths.preset).spec == plan.spec  # the snapshot round-trips
    cmd = shlex.split(paths.command.read_text())
    assert "--num_accelerators=2" in cmd and "--master_port=29999" in cmd
    assert cmd[cmd.index("--module") + 1] == "ds_wizard.train"
    assert cmd[cmd.index("--steps") + 1] == "7"
    assert paths.script.stat().st_mode & 0o111
    from ds_wizard.core.runs.runspec import read_run_info

    spec = read_run_info(paths.run_json).spec
    assert spec == plan.run  # written once, read back whole
    assert spec.preset == "tiny_mamba" and spec.world_size == 2
    assert (spec.micro_batch * spec.grad_accum * 2, spec.zero_stage) == (
        cfg["train_batch_size"], cfg["zero_optimization"]["stage"])
    assert rundir.load_run_json(paths.root)["world_size"] == 2  # flat keys, as before


def test_cuda_command_uses_num_gpus(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    plan = planning.prepare_run(LaunchRequest("tiny_mamba", 4, runs_dir=tmp_path, accelerator=CUDA,
                                data=None, steps=3))
    assert "--num_gpus=4" in plan.command and "OMP_NUM_THREADS" not in plan.env
    with pytest.raises(planning.LaunchRefused, match="only 4 GPU"):
        planning.prepare_run(LaunchRequest("tiny_mamba", 8, runs_dir=tmp_path, accelerator=CUDA))


def test_seed_broken_config_is_refused_before_anything_exists(tmp_path: Path) -> None:
    cfg = tmp_path / "deepspeed_config.json"
    cfg.write_text(json.dumps(BROKEN))
    runs_dir = tmp_path / "runs"
    result = CliRunner().invoke(main, ["launch", "--preset", "tiny_mamba", "--config",
                                       str(cfg), "--num-gpus", "4", "--runs-dir",
                                       str(runs_dir)])
    assert result.exit_code == 1
    out = result.output
    assert "refused before launch" in out and "16 != 4 * 8 * 4" in out
    assert "128 = 4 × 8 × 4" in out and f"ds-wizard fix {cfg} --num-gpus 4" in out
    assert not runs_dir.exists()


def test_dry_run_prints_the_seed_summary_and_starts_nothing(tmp_path: Path) -> None:
    cfg = tmp_path / "deepspeed_4gpu.json"
    cfg.write_text(json.dumps({**BROKEN, "train_batch_size": 128}))
    result = CliRunner().invoke(main, ["launch", "--preset", "7b_mamba", "--num-gpus", "4",
                                       "--config", str(cfg), "--dry-run", "--runs-dir",
                                       str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    for line in (f"✅ Using pre-built config: {cfg}", "✅ Config validated: 128 = 4 × 8 × 4",
                 "Model type: mamba", "GPUs: 4", "Batch size per GPU: 4",
                 "Gradient accumulation: 8", "Effective batch size: 128", "ZeRO stage: 0",
                 "✅ Batch size validated: 128 = 4 × 8 × 4",
                 "✅ Config validation complete (dry_run mode)"):
        assert line in result.output
    assert not (tmp_path / "runs").exists()


def test_run_names_never_collide(tmp_path: Path) -> None:
    now = datetime(2026, 1, 2, 3, 4, 5)
    a = rundir.create_run_dir(tmp_path, "my preset!", now)
    b = rundir.create_run_dir(tmp_path, "my preset!", now)
    assert a.name == "my_preset-20260102-030405" and b.name == a.name + "-2"


def _fake_checkpoint(ckpt: Path, step: int, marker: bool = True) -> None:
    tag = rundir.checkpoint_tag(step)
    (ckpt / tag).mkdir(parents=True)
    (ckpt / tag / "mp_rank_00_model_states.pt").write_bytes(b"x")
    if marker:
        rundir.write_marker(ckpt, tag, step, {})


def test_latest_complete_skips_checkpoints_without_a_marker(tmp_path: Path) -> None:
    _fake_checkpoint(tmp_path, 10)
    _fake_checkpoint(tmp_path, 20)
    _fake_checkpoint(tmp_path, 30, marker=False)  # DeepSpeed's `latest` would say 30
    (tmp_path / "latest").write_text("global_step30")
    assert rundir.latest_complete(tmp_path).step == 20
    # a marker that names another step (copied by hand, torn) does not count
    (tmp_path / "global_step20" / rundir.MARKER).write_text('{"tag": "global_step10", "step": 10}')
    assert rundir.latest_complete(tmp_path).step == 10
    (tmp_path / "global_step10" / rundir.MARKER).write_text("{trunc")
    assert rundir.latest_complete(tmp_path) is None


def test_resume_plan_uses_the_run_and_refuses_other_world_sizes(tmp_path: Path) -> None:
    plan = planning.prepare_run(LaunchRequest("tiny_mamba", None, steps=5, runs_dir=tmp_path,
                                accelerator=CPU))
    with pytest.raises(rundir.RunError, match="complete checkpoint"):
        planning.prepare_run(LaunchRequest(resume="latest", runs_dir=tmp_path, accelerator=CPU))
    _fake_checkpoint(plan.paths.checkpoints, 5)
    with pytest.raises(DsWizardError, match="already at step 5"):
        planning.prepare_run(LaunchRequest(resume=str(plan.run_dir), runs_dir=tmp_path,
                                           accelerator=CPU))
    # another world size is a resume through a universal checkpoint (launch.reshape), but
    # tiny_mamba's global batch 16 does not split over 3 ranks: refused, nothing written
    with pytest.raises(DsWizardError, match=r"global batch 16 cannot be split over 3 "
                       r"data-parallel rank.*nearest valid global batches: 15 or 18"):
        planning.prepare_run(LaunchRequest(resume="latest", num_gpus=3, steps=9, runs_dir=tmp_path,
                             accelerator=CPU))
    again = planning.prepare_run(LaunchRequest(resume="latest", steps=9, runs_dir=tmp_path,
                                               accelerator=CPU))
    assert again.run_dir == plan.run_dir and again.resume_step == 5
    assert "--resume" in again.command and again.command[again.command.index("--steps") + 1] \
        == "9"


def test_resume_refuses_the_flags_it_would_otherwise_ignore(tmp_path: Path) -> None:
    plan = planning.prepare_run(LaunchRequest("tiny_mamba", None, steps=5, runs_dir=tmp_path,
                                accelerator=CPU))
    _fake_checkpoint(plan.paths.checkpoints, 2)
    with pytest.raises(DsWizardError, match="--set, --data cannot change it"):
        planning.prepare_run(LaunchRequest(resume="latest", sets=["train.lr=1e-3"], data="more.txt",
                             runs_dir=tmp_path, accelerator=CPU))
    result = CliRunner().invoke(main, ["launch", "--resume", "latest", "--preset",
                                       "tiny_mamba", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 1 and "--preset cannot change it" in result.output


def test_read_new_metrics_consumes_only_complete_lines(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    assert read_new_metrics(path, 0) == ([], 0)
    path.write_text('{"step": 1}\n{"step": 2}\n{"st')
    records, offset = read_new_metrics(path, 0)
    assert [r["step"] for r in records] == [1, 2]
    with path.open("a") as fh:
        fh.write('ep": 3}\nnot json\n')
    records, offset2 = read_new_metrics(path, offset)
    assert [r["step"] for r in records] == [3] and offset2 == path.stat().st_size


def test_rank_failure_is_readable() -> None:
    lines = ["x", "[2026] [ERROR] [launch.py:3:sigkill_handler] ['python'] exits with "
             "return code = -9"]
    assert supervisor.rank_failure(lines) == ("a rank was killed by SIGKILL (out of memory, or "
                                           "killed by hand)")
    assert supervisor.rank_failure(["... exits with return code = 3"]) == \
        "a rank exited with code 3"
    assert supervisor.rank_failure(["nothing"]) is None


STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)   # a rank that ignores the polite stop
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "signal.signal(signal.SIGTERM, signal.SIG_IGN); print('child up', flush=True); "
    "time.sleep(600)"])
print("parent up", flush=True)
time.sleep(600)
"""


def test_supervisor_stops_and_reaps_the_whole_group(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    seen: list[str] = []
    sup = supervisor.Supervisor([sys.executable, "-c", STUBBORN], log_path=log,
                              on_line=seen.append).start()
    deadline = time.monotonic() + 30
    while len(sup.pids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    pids = sup.pids()
    assert len(pids) == 2 and sup.pid in pids
    code = sup.stop(grace_s=0.5, kill_after_s=0.5)
    assert code != 0 and sup.killed
    assert not [p for p in pids if psutil.pid_exists(p)
                and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert sup.pids() == []
    assert "parent up" in log.read_text() and "parent up" in seen


def test_supervisor_streams_lines_and_returns_the_exit_code(tmp_path: Path) -> None:
    sup = supervisor.Supervisor([sys.executable, "-c",
                               "print('a'); print('b'); raise SystemExit(3)"],
                              log_path=tmp_path / "log").start()
    assert list(sup.lines()) == ["a", "b"]
    assert sup.wait() == 3 and not sup.stop_requested
    assert supervisor.describe_exit(3, sup).startswith("the job exited with code 3")


def test_supervisor_kills_processes_left_behind_by_the_leader(tmp_path: Path,
                                                              monkeypatch) -> None:
    monkeypatch.setattr(supervisor, "LINGER_S", 0.5)
    orphan = ("import subprocess, sys; subprocess.Popen([sys.executable, '-c', "
              "'import time; time.sleep(600)'], stdout=subprocess.DEVNULL); print('bye')")
    sup = supervisor.Supervisor([sys.executable, "-c", orphan]).start()
    assert sup.wait() == 0
    assert sup.pids() == [] and sup.killed


# A job shaped like the real one: runner → launch.py → a rank (its argv has
# `-m ds_wizard.train`). Like DeepSpeed's launch.py, the middle process cuts the rank
# down as soon as it is signalled; the rank needs a moment to "checkpoint" after SIGINT.
RANK = """
import signal, time
stop = []
signal.signal(signal.SIGINT, lambda signum, frame: stop.append(signum))
print("rank up", flush=True)
while not stop:
    time.sleep(0.05)
print("rank: checkpoint", flush=True)
time.sleep(0.5)
print("rank: saved", flush=True)
"""
LAUNCH_PY = f"""
import signal, subprocess, sys
rank = subprocess.Popen([sys.executable, "-c", {RANK!r}, "-m", "ds_wizard.train"])
def cut(signum, frame):
    print("launch.py: killing the rank", flush=True)
    rank.kill()
signal.signal(signal.SIGINT, cut)
signal.signal(signal.SIGTERM, cut)
sys.exit(rank.wait())
"""
RUNNER = f"""
import os, subprocess, sys
print("pgid", os.getpgid(0), flush=True)
sys.exit(subprocess.run([sys.executable, "-c", {LAUNCH_PY!r}]).returncode)
"""


def test_stop_signals_only_the_ranks_so_they_can_checkpoint() -> None:
    seen: list[str] = []
    sup = supervisor.Supervisor([sys.executable, "-c", RUNNER], on_line=seen.append).start()
    try:
        deadline = time.monotonic() + 30
        while "rank up" not in seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(sup.rank_pids()) == 1 and len(sup.pids()) == 3
        code = sup.stop(grace_s=30, kill_after_s=1)
    finally:
        if sup.pids():  # only when an assertion above failed
            sup.kill()
    assert "rank: saved" in seen and "launch.py: killing the rank" not in seen, seen
    assert code == 0 and not sup.killed and sup.pids() == []


def test_train_entry_dry_run_matches_the_seed_document() -> None:
    import subprocess

    out = subprocess.run([sys.executable, "-m", "ds_wizard.train", "--preset", "7b_mamba",
                          "--num-gpus", "4", "--dry-run"], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert "✅ Config validated: 128 = 4 × 8 × 4" in out
    assert "Estimated parameters: 6.95B (6,945,935,360)" in out
    assert "✅ Config validation complete (dry_run mode)" in out


def test_rank_selection_respects_cuda_visible_devices() -> None:
    ds = command.deepspeed_launcher()
    assert command.rank_selection("cpu", 2, "0,1") == [*ds, "--num_accelerators=2"]
    assert command.rank_selection("cuda", 4, "") == [*ds, "--num_gpus=4"]
    # deepspeed would take GPUs 0,1 for --num_gpus 2 whatever the variable says
    assert command.rank_selection("cuda", 2, "3,5,7") == [*ds, "--include=localhost:3,5"]


def test_cpu_dry_run_labels_its_ranks_as_cpu_ranks(tmp_path: Path, monkeypatch) -> None:
    # No --num-gpus and no GPU: the demo plans CPU ranks, and the summary must not call
    # them GPUs (that would send a reader looking for GPUs that are not there).
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    result = CliRunner().invoke(main, ["launch", "--preset", "tiny_mamba", "--dry-run",
                                       "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "CPU ranks: 2" in result.output and "Batch size per rank: 4" in result.output
    assert "GPUs:" not in result.output
