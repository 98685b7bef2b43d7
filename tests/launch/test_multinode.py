"""Multi-node jobs through DeepSpeed's own launcher: hostfile runs, Slurm, two nodes on one box.

The slow test runs a real two-node job on this machine: the real ``deepspeed`` runner
with the hostfile the wizard wrote, and fakes of the two cluster tools it calls, ``ssh``
(reachability and the master's address) and ``pdsh`` (which runs the same per-node
command on every host with ``%n`` replaced by the node's rank, as pdsh does).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner
from fakes import start_cli

from ds_wizard.cli import main
from ds_wizard.core.batch.topology import parse_hostfile
from ds_wizard.core.runs import rundir
from ds_wizard.core.runs.metrics import read_metrics
from ds_wizard.core.runs.runspec import Accelerator, read_run_info
from ds_wizard.launch.command import DEEPSPEED_ENV, HOSTFILE_NAME, SBATCH_NAME
from ds_wizard.launch.plan import LaunchRefused, LaunchRequest, prepare_run

GPU_NODES = Accelerator("cuda", 8, "test: 8 GPUs per node")


def _fake(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    return bin_dir


def test_slurm_script_builds_the_hostfile_and_runs_deepspeeds_launcher(
        tmp_path: Path, fake_bin: Path) -> None:
    plan = prepare_run(LaunchRequest("tiny_mamba", num_nodes=2, gpus_per_node=8, slurm=True,
                                     runs_dir=tmp_path / "runs", accelerator=GPU_NODES,
                                     master_port=29999))
    assert plan.sbatch is not None and plan.sbatch.name == SBATCH_NAME
    assert subprocess.run(["bash", "-n", str(plan.sbatch)]).returncode == 0
    text = plan.sbatch.read_text()
    assert "#SBATCH --nodes=2\n" in text and "#SBATCH --gpus-per-node=8\n" in text
    info = read_run_info(plan.paths.run_json).spec
    assert (info.world_size, info.nodes) == (16, 2)
    assert plan.config["train_batch_size"] == (plan.config["train_micro_batch_size_per_gpu"]
                                               * plan.config["gradient_accumulation_steps"] * 16)

    _fake(fake_bin, "scontrol", (
        "import sys\n"
        "assert sys.argv[1:] == ['show', 'hostnames', 'gpu[07-08]'], sys.argv\n"
        "print('gpu07'); print('gpu08')\n"))
    argv_file = tmp_path / "argv.json"
    _fake(fake_bin, "deepspeed", (
        "import json, sys\n"
        f"json.dump(sys.argv[1:], open({str(argv_file)!r}, 'w'))\n"))
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}",
           "SLURM_JOB_NODELIST": "gpu[07-08]", DEEPSPEED_ENV: str(fake_bin / "deepspeed")}
    done = subprocess.run(["bash", str(plan.sbatch), "--resume"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

    hostfile = plan.paths.root.resolve() / HOSTFILE_NAME
    assert hostfile.read_text() == "gpu07 slots=8\ngpu08 slots=8\n"
    assert [(h.name, h.slots) for h in parse_hostfile(hostfile.read_text())] == [
        ("gpu07", 8), ("gpu08", 8)]
    root = plan.paths.root.resolve()
    assert json.loads(argv_file.read_text()) == [
        f"--hostfile={hostfile}", "--master_addr=gpu07", "--master_port=29500",
        "--module", "ds_wizard.train", "--run-dir", str(root),
        "--deepspeed_config", str(root / "ds_config.json"),
        "--preset", str(root / "preset.toml"), "--steps", str(plan.steps),
        "--backend", "auto", "--resume"]
    # a resume writes the script again for the same nodes
    (plan.paths.checkpoints / rundir.checkpoint_tag(5)).mkdir(parents=True)
    rundir.write_marker(plan.paths.checkpoints, rundir.checkpoint_tag(5), 5, {})
    plan.sbatch.unlink()
    again = prepare_run(LaunchRequest(resume=str(plan.paths.root), slurm=True,
                                      runs_dir=tmp_path / "runs", accelerator=GPU_NODES))
    assert again.sbatch is not None
    text = again.sbatch.read_text()
    assert "#SBATCH --nodes=2\n" in text and "slots=8" in text and "--resume" in text
    # outside an allocation the script refuses plainly
    env.pop("SLURM_JOB_NODELIST")
    done = subprocess.run(["bash", str(plan.sbatch)], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "run this script with sbatch" in done.stderr


def test_hostfile_launch_writes_the_hostfile_command(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("# cluster\nalpha slots=8\nbeta slots=8\ngamma slots=8\n")
    plan = prepare_run(LaunchRequest("tiny_mamba", hostfile=hosts, num_nodes=2,
                                     gpus_per_node=4, runs_dir=tmp_path / "runs",
                                     accelerator=GPU_NODES))
    snapshot = plan.paths.root.resolve() / HOSTFILE_NAME
    # the snapshot holds the chosen hosts and slots, so the command needs no filters
    assert [(h.name, h.slots) for h in parse_hostfile(snapshot.read_text())] == [
        ("alpha", 4), ("beta", 4)]
    assert f"--hostfile={snapshot}" in plan.command
    assert not any(c.startswith(("--num_gpus", "--include", "--num_accelerators"))
                   for c in plan.command)
    script = plan.paths.script.read_text()
    assert f"--hostfile={snapshot}" in script
    assert subprocess.run(["bash", "-n", str(plan.paths.script)]).returncode == 0
    assert read_run_info(plan.paths.run_json).spec.world_size == 8
    assert plan.config["train_batch_size"] % 8 == 0


def test_multi_node_without_names_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LaunchRefused, match="DeepSpeed needs the nodes") as info:
        prepare_run(LaunchRequest("tiny_mamba", num_nodes=2, gpus_per_node=8,
                                  runs_dir=tmp_path, accelerator=GPU_NODES))
    assert "--hostfile FILE" in info.value.one_line()
    assert not list(tmp_path.iterdir())


def test_generate_with_a_hostfile_writes_config_and_script(tmp_path: Path,
                                                           monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hosts").write_text("n1 slots=2\nn2 slots=2\n")
    (tmp_path / "out").mkdir()
    result = CliRunner().invoke(main, ["generate", "--preset", "tiny_mamba", "--hostfile",
                                       "hosts", "--out-dir", "out", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["gpus"] for r in rows] == [4]
    script = (tmp_path / "out" / "launch_deepspeed.sh").read_text()
    run_dir = rundir.list_runs(tmp_path / "runs")[0].resolve()
    assert f"--hostfile={run_dir / HOSTFILE_NAME}" in script
    assert json.loads((run_dir / "ds_config.json").read_text()) == json.loads(
        (tmp_path / "out" / "deepspeed_4gpu.json").read_text())
    bad = CliRunner().invoke(main, ["generate", "--hostfile", "hosts", "--gpus", "8",
                                    "--out-dir", "out"])
    assert bad.exit_code == 2 and "drop --gpus" in bad.output


FAKE_SSH = """import sys
# `ssh -o PasswordAuthentication=no HOST hostname` (reachability), `ssh HOST hostname -I`
print("127.0.0.1" if sys.argv[-1] == "-I" else "localhost")
"""
FAKE_PDSH = """import os, subprocess, sys
args, hosts = sys.argv[1:], []
while args and args[0].startswith("-"):
    flag = args.pop(0)
    if flag in ("-w", "-f", "-R", "-l"):
        value = args.pop(0)
        if flag == "-w":
            hosts = value.split(",")
command = " ".join(args)
procs = []
for n, host in enumerate(hosts):
    line = command.replace("%n", str(n))
    with open(os.environ["FAKE_PDSH_LOG"], "a") as log:
        log.write(host + "\\t" + line + "\\n")
    procs.append(subprocess.Popen(["bash", "-c", line]))
sys.exit(max(p.wait() for p in procs))
"""


@pytest.mark.slow
def test_two_nodes_on_one_machine_train_with_world_size_two(tmp_path: Path,
                                                            fake_bin: Path) -> None:
    _fake(fake_bin, "ssh", FAKE_SSH)
    _fake(fake_bin, "pdsh", FAKE_PDSH)
    hosts = tmp_path / "hosts"
    hosts.write_text("node-a slots=1\nnode-b slots=1\n")
    pdsh_log = tmp_path / "pdsh.log"
    env = {"PATH": f"{fake_bin}:{os.environ['PATH']}", "DS_ACCELERATOR": "cpu",
           "FAKE_PDSH_LOG": str(pdsh_log)}
    proc = start_cli("launch", "--preset", "tiny_mamba", "--hostfile", str(hosts), "--steps",
                     "3", "--runs-dir", str(tmp_path / "runs"), "--master-addr", "127.0.0.1",
                     env=env, cwd=tmp_path)
    try:
        out, _ = proc.communicate(timeout=1200)
    finally:
        for child in psutil.Process().children(recursive=True):
            if child.pid == proc.pid or os.getpgid(child.pid) == proc.pid:
                child.send_signal(signal.SIGKILL)
    assert proc.returncode == 0, out[-4000:]
    per_node = pdsh_log.read_text().splitlines()
    assert [line.split("\t")[0] for line in per_node] == ["node-a", "node-b"]
    for rank, line in enumerate(per_node):
        assert "-m deepspeed.launcher.launch" in line
        assert f"--node_rank={rank}" in line and "--master_addr=127.0.0.1" in line
        assert "--module" in line and " ds_wizard.train --run-dir " in line
    for rank in (0, 1):
        assert f"[rank {rank}] world size 2, node rank {rank}, local rank 0" in out, out
    run_dir = rundir.list_runs(tmp_path / "runs")[0]
    assert [r["step"] for r in read_metrics(run_dir / rundir.METRICS)] == [1, 2, 3]
    assert "= 4 × 2 × 2" in out or "× 2, seq_len" in out
    assert "training finished" in out


def _seed(path: Path, batch: int, micro: int, gas: int) -> Path:
    path.write_text(json.dumps({"train_batch_size": batch,
                                "train_micro_batch_size_per_gpu": micro,
                                "gradient_accumulation_steps": gas}))
    return path


def test_every_batch_command_takes_the_nodes(tmp_path: Path, monkeypatch) -> None:
    """check, fix, --auto and plan: the same hostfile gives the same world size."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hosts").write_text("n1 slots=4\nn2 slots=4\n")
    cfg = _seed(tmp_path / "ds.json", 32, 2, 2)  # 32 = 2 × 2 × 8
    run = CliRunner().invoke
    ok = run(main, ["check", str(cfg), "--hostfile", "hosts"])
    assert ok.exit_code == 0, ok.output
    assert "world size 8 (2 nodes × 4 GPUs = 8 ranks, hostfile hosts)" in ok.output
    assert run(main, ["check", str(cfg), "--num-nodes", "2", "--gpus-per-node", "4"]
               ).exit_code == 0
    assert run(main, ["check", str(cfg), "--num-nodes", "2", "--gpus-per-node", "2"]
               ).exit_code == 1
    tp = run(main, ["check", str(cfg), "--hostfile", "hosts", "--tp", "2"])
    assert tp.exit_code == 1 and "data-parallel size 4" in tp.output
    fixed = run(main, ["fix", str(cfg), "--num-nodes", "4", "--gpus-per-node", "4",
                       "-o", "fixed.json"])
    assert fixed.exit_code == 0, fixed.output
    data = json.loads((tmp_path / "fixed.json").read_text())
    assert data["train_batch_size"] == (data["train_micro_batch_size_per_gpu"]
                                        * data["gradient_accumulation_steps"] * 16)
    auto = run(main, ["--auto", "--preset", "tiny_mamba", "--hostfile", "hosts", "--json",
                      "--dry-run"])
    assert auto.exit_code == 0, auto.output
    assert json.loads(auto.stdout)["world_size"] == 8
    plan = run(main, ["plan", "--preset", "tiny_mamba", "--hostfile", "hosts",
                      "--gpu-memory", "80GiB", "--json"])
    assert plan.exit_code == 0, plan.output
    assert "8 GPU(s) on 2 node(s)" in run(main, ["plan", "--preset", "tiny_mamba",
                                                  "--hostfile", "hosts", "--gpu-memory",
                                                  "80GiB"]).output
    (tmp_path / "bad").write_text("n1 slots=4\nn2 4\n")
    bad = run(main, ["check", str(cfg), "--hostfile", "bad"])
    assert bad.exit_code == 1 and "bad line 2: 'n2 4' is not `host slots=N`" in bad.output


def test_resume_on_other_hosts_keeps_the_shape(tmp_path: Path) -> None:
    first = tmp_path / "first"
    first.write_text("a slots=2\nb slots=2\n")
    plan = prepare_run(LaunchRequest("tiny_mamba", hostfile=first, runs_dir=tmp_path / "runs",
                                     accelerator=GPU_NODES, steps=20))
    (plan.paths.checkpoints / rundir.checkpoint_tag(5)).mkdir(parents=True)
    rundir.write_marker(plan.paths.checkpoints, rundir.checkpoint_tag(5), 5, {})
    moved = tmp_path / "moved"
    moved.write_text("c slots=2\nd slots=2\n")
    again = prepare_run(LaunchRequest(resume=str(plan.paths.root), hostfile=moved,
                                      runs_dir=tmp_path / "runs", accelerator=GPU_NODES))
    snapshot = plan.paths.root.resolve() / HOSTFILE_NAME
    assert [h.name for h in parse_hostfile(snapshot.read_text())] == ["c", "d"]
    assert f"--hostfile={snapshot}" in again.command and "--resume" in again.command
    # the same 4 ranks on one node: ZeRO's shards are per rank, not per node, so this is a
    # plain resume (another world size would go through a universal checkpoint, issue 21)
    one_node = tmp_path / "one-node"
    one_node.write_text("c slots=4\n")
    third = prepare_run(LaunchRequest(resume=str(plan.paths.root), hostfile=one_node,
                                      runs_dir=tmp_path / "runs", accelerator=GPU_NODES))
    assert third.world_size == 4 and "--resume" in third.command
    assert [h.name for h in parse_hostfile(snapshot.read_text())] == ["c"]


def test_generate_slurm_for_one_total(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    ok = CliRunner().invoke(main, ["generate", "--preset", "tiny_mamba", "--num-nodes", "2",
                                   "--gpus", "16", "--slurm", "--out-dir", "out"])
    assert ok.exit_code == 0, ok.output
    text = (tmp_path / "out" / SBATCH_NAME).read_text()
    assert "#SBATCH --nodes=2\n" in text and "slots=8" in text
    assert (tmp_path / "out" / "deepspeed_16gpu.json").is_file()
    bad = CliRunner().invoke(main, ["generate", "--num-nodes", "2", "--gpus", "8,16",
                                    "--slurm", "--out-dir", "out"])
    assert bad.exit_code == 2 and "one run" in bad.output


RUNNER_STANDIN = """
import pathlib, signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # pdsh
def on_signal(signum, frame):
    alive = child.poll() is None
    pathlib.Path(sys.argv[1]).write_text(f"{signal.Signals(signum).name} {alive}")
    child.kill()
    sys.exit(0)
signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)
print("up", flush=True)
time.sleep(60)
"""


def test_stop_of_a_hostfile_job_goes_to_deepspeeds_runner(tmp_path: Path) -> None:
    """The ranks of a multi-node job are on the hosts: the stop is the runner's SIGTERM
    (which stops pdsh and launch.py everywhere), not a SIGINT to pdsh."""
    from ds_wizard.launch.supervisor import Supervisor

    marker = tmp_path / "signal"
    job = Supervisor([sys.executable, "-c", RUNNER_STANDIN, str(marker),
                      "--hostfile=/shared/run/hostfile"]).start()
    try:
        assert next(iter(job.lines())) == "up"
        job.stop(grace_s=20, kill_after_s=5)
        assert marker.read_text() == "SIGTERM True"
        assert job.pids() == []
    finally:
        job.kill()
