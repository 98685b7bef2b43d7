"""The ``deepspeed`` command line and environment of a run (no torch here)."""

from __future__ import annotations

import os
import shlex
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from ds_wizard import __version__
from ds_wizard.core import runs
from ds_wizard.core.fsio import atomic_write_text
from ds_wizard.core.runspec import Accelerator, RunSpec
from ds_wizard.core.topology import Topology
from ds_wizard.launch.defaults import TRAIN_MODULE

HOSTFILE_NAME = "hostfile"  # RUN_DIR/hostfile: the nodes of a multi-node run
SBATCH_NAME = "launch_slurm.sbatch"
# the sbatch script runs this instead of the deepspeed found at generation time, when set
DEEPSPEED_ENV = "DS_WIZARD_DEEPSPEED"


def free_port() -> int:
    """A TCP port free right now, so concurrent runs do not fight over 29500."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def deepspeed_launcher() -> list[str]:
    """The ``deepspeed`` script of this environment, or the runner module."""
    script = Path(sys.executable).parent / "deepspeed"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "deepspeed.launcher.runner"]


def rank_selection(kind: str, world_size: int,
                   visible: str | None = None) -> list[str]:
    """``--num_gpus=N`` (CUDA) or ``--num_accelerators=N`` (CPU).

    The deepspeed runner ignores CUDA_VISIBLE_DEVICES once --num_gpus is given and takes
    GPUs 0..N-1, so with the variable set the visible ids are named with --include.
    """
    if kind != "cuda":
        return [f"--num_accelerators={world_size}"]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    ids = [t.strip() for t in (visible or "").split(",") if t.strip()]
    if ids:
        return [f"--include=localhost:{','.join(ids[:world_size])}"]
    return [f"--num_gpus={world_size}"]


def build_command(spec: RunSpec, run_dir: Path, *, resume: bool = False,
                  master_port: int | None = None, master_addr: str | None = None,
                  extra: Sequence[str] = ()) -> list[str]:
    """The launcher command. The rank reads its decisions from RUN_DIR/run.json; the
    flags that repeat some of them are there for a reader of command.txt and for
    ``launch_deepspeed.sh`` users who override one (``--steps N``).

    A multi-node run names its hostfile; DeepSpeed's runner then starts
    ``deepspeed.launcher.launch`` on every host (pdsh over ssh by default)."""
    paths = runs.RunPaths(run_dir)
    where = ([f"--hostfile={spec.hostfile}"] if spec.hostfile
             else rank_selection(spec.accelerator, spec.world_size))
    if master_addr:
        where.append(f"--master_addr={master_addr}")
    cmd = [*deepspeed_launcher(), *where,
           f"--master_port={master_port or free_port()}",
           "--module", TRAIN_MODULE,
           "--run-dir", str(paths.root.resolve()),
           "--deepspeed_config", str(paths.config.resolve()),
           "--preset", str(paths.preset.resolve()),
           "--steps", str(spec.steps),
           "--backend", spec.backend]
    if spec.data:
        cmd += ["--data", spec.data]
    if spec.data_dtype:
        cmd += ["--data-dtype", spec.data_dtype]
    if spec.tokenizer:
        cmd += ["--tokenizer", spec.tokenizer]
    if resume:
        cmd.append("--resume")
    return cmd + list(extra)


def run_env(accel: Accelerator, world_size: int) -> dict[str, str]:
    env = {"PYTHONUNBUFFERED": "1"}
    if accel.kind == "cpu":
        # CPU ranks even where GPUs exist (the TUI's CPU demo, tests on a GPU box)
        env["DS_ACCELERATOR"] = "cpu"
    if accel.kind == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # one rank per core share: more threads than cores makes CPU ranks crawl
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // world_size))
    return env


def command_text(command: Sequence[str], env: dict[str, str]) -> str:
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
    return (prefix + " " if prefix else "") + shlex.join(command)


def write_script(path: Path, command: Sequence[str], env: dict[str, str]) -> None:
    """``launch_deepspeed.sh``: the launch, re-runnable by hand."""
    lines = ["#!/usr/bin/env bash",
             f"# Re-runs this run's launch by hand (ds-wizard {__version__}). Extra arguments",
             "# are passed to the training entry point, e.g. --resume or --steps N.",
             "set -euo pipefail",
             f"cd {shlex.quote(str(Path.cwd()))}"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
    # a fixed port in a hand-run script could clash with a concurrent run; pick one now
    cmd = [c for c in command if not c.startswith("--master_port=")]
    lines.append(f'exec {shlex.join(cmd[:1])} '
                 f'--master_port="$({shlex.quote(sys.executable)} -c '
                 f"'import ds_wizard.launch.command as c; print(c.free_port())')\" "
                 f'{shlex.join(cmd[1:])} "$@"')
    atomic_write_text(path, "\n".join(lines) + "\n")
    path.chmod(0o755)


def write_hostfile(path: Path, topo: Topology) -> None:
    """The hosts a run uses, as DeepSpeed reads them (its --num_nodes/--num_gpus applied)."""
    lines = [f"# the nodes of this run (ds-wizard {__version__}): {topo.layout()}"]
    lines += [f"{host} slots={n}" for host, n in zip((h.name for h in topo.hosts),
                                                      topo.ranks_per_node, strict=True)]
    atomic_write_text(path, "\n".join(lines) + "\n")


def sbatch_text(run_dir: Path, command: Sequence[str], env: dict[str, str],
                topo: Topology, *, gpus: bool, job_name: str) -> str:
    """An ``sbatch`` script: the hostfile from ``SLURM_JOB_NODELIST``, then DeepSpeed's runner.

    One Slurm task per node is enough: DeepSpeed's runner, on the first node, starts
    ``deepspeed.launcher.launch`` on every host itself (pdsh over ssh).
    """
    root = run_dir.resolve()
    hostfile = root / HOSTFILE_NAME
    per_node = topo.gpus_per_node
    cmd = [c for c in command if not c.startswith(("--master_port=", "--master_addr=",
                                                   "--hostfile="))]
    lines = [
        "#!/usr/bin/env bash",
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --nodes={topo.nodes}",
        "#SBATCH --ntasks-per-node=1",
        *([f"#SBATCH --gpus-per-node={per_node}"] if gpus else []),
        f"#SBATCH --output={root}/slurm-%j.out",
        f"# Starts run {root.name} on the nodes Slurm allocates (ds-wizard {__version__}):",
        f"# writes {HOSTFILE_NAME} from SLURM_JOB_NODELIST, then runs DeepSpeed's launcher.",
        "# Extra arguments go to the training entry point, e.g. --resume or --steps N.",
        "set -euo pipefail",
        f"cd {shlex.quote(str(Path.cwd()))}",
        ': "${SLURM_JOB_NODELIST:?run this script with sbatch (SLURM_JOB_NODELIST is unset)}"',
        f"HOSTFILE={shlex.quote(str(hostfile))}",
        'HOSTS="$(scontrol show hostnames "$SLURM_JOB_NODELIST")"',
        f"printf '%s slots={per_node}\\n' $HOSTS > \"$HOSTFILE.tmp\"",
        'mv "$HOSTFILE.tmp" "$HOSTFILE"',
        "MASTER_ADDR=\"$(printf '%s\\n' $HOSTS | head -n 1)\"",
    ]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
    first = _first_flag(cmd)
    lines += [
        f'if [ -n "${{{DEEPSPEED_ENV}:-}}" ]; then LAUNCHER=("${DEEPSPEED_ENV}"); '
        f'else LAUNCHER=({shlex.join(cmd[:first])}); fi',
        'exec "${LAUNCHER[@]}" --hostfile="$HOSTFILE" --master_addr="$MASTER_ADDR" '
        f'--master_port="${{MASTER_PORT:-29500}}" {shlex.join(cmd[first:])} "$@"',
    ]
    return "\n".join(lines) + "\n"


def _first_flag(cmd: Sequence[str]) -> int:
    """Where the runner's own flags start (after ``python -m deepspeed.launcher.runner``)."""
    for i, c in enumerate(cmd[1:], start=1):
        if c.startswith("--"):
            return i
    return len(cmd)


def write_sbatch(path: Path, run_dir: Path, command: Sequence[str], env: dict[str, str],
                 topo: Topology, *, gpus: bool) -> None:
    atomic_write_text(path, sbatch_text(run_dir, command, env, topo, gpus=gpus,
                                        job_name=f"ds-wizard-{run_dir.name}"))
    path.chmod(0o755)
