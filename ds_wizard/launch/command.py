"""The ``deepspeed`` command line and environment of a run (no torch here)."""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from ds_wizard import __version__
from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.base.fsio import atomic_write_text
from ds_wizard.core.batch.topology import Topology
from ds_wizard.core.runs import rundir
from ds_wizard.core.runs.runspec import Accelerator, RunSpec
from ds_wizard.launch.defaults import TRAIN_MODULE

HOSTFILE_NAME = "hostfile"  # RUN_DIR/hostfile: the nodes of a multi-node run
SBATCH_NAME = "launch_slurm.sbatch"
# the sbatch script runs this instead of the deepspeed found at generation time, when set
DEEPSPEED_ENV = "DS_WIZARD_DEEPSPEED"


class ScriptValueError(DsWizardError):
    """A value that cannot be written into a generated script or hostfile safely."""


# C0/C1 controls, DEL, line and paragraph separators: none can be quoted into a line of a
# script that a person reads, and a newline in a #SBATCH line starts a new command
_UNSCRIPTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def refuse_unscriptable(value: str, what: str) -> str:
    """``value`` when it holds no control character or line break, else ScriptValueError."""
    if _UNSCRIPTABLE.search(value):
        raise ScriptValueError(
            f"{what} {value!r} holds a control character or a line break",
            "rename it: ds-wizard writes it into a shell script, where it cannot be quoted")
    return value


def shell_word(value: str, what: str = "a value") -> str:
    """The one way a value enters a generated script: refused if it holds a control
    character or a line break, else quoted by ``shlex.quote`` (one shell word, nothing
    in it expanded: ``$()``, backticks, quotes and spaces stay text)."""
    return shlex.quote(refuse_unscriptable(value, what))


def shell_words(values: Sequence[str], what: str = "a command-line argument") -> str:
    return " ".join(shell_word(v, what) for v in values)


def sbatch_value(value: str, what: str) -> str:
    """A ``#SBATCH --opt=VALUE`` value: no line break or control character (a new line
    would be a new command), no double quote; quoted with ``"`` when it has spaces or
    ``#`` (sbatch reads ``"…"`` in these lines as one argument)."""
    refuse_unscriptable(value, what)
    if '"' in value:
        raise ScriptValueError(f"{what} {value!r} holds a double quote",
                               "sbatch cannot read one in a #SBATCH line; rename it")
    return f'"{value}"' if re.search(r"[\s#'\\$`]", value) else value


def check_scriptable(values: dict[str, str | None]) -> None:
    """Refuse, before anything is written, each value a run's scripts will hold that
    cannot be written safely (``what`` → value; None skipped)."""
    for what, value in values.items():
        if value is not None:
            refuse_unscriptable(str(value), what)


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


PER_NODE_LAUNCHER = "deepspeed.launcher.launch"


def visible_tokens(visible: str | None = None) -> list[str]:
    """The entries of ``CUDA_VISIBLE_DEVICES`` (the environment's when not given)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    return [t.strip() for t in (visible or "").split(",") if t.strip()]


def include_expresses(tokens: Sequence[str]) -> bool:
    """Whether ``--include=localhost:…`` keeps this device list as it is.

    DeepSpeed's runner (``parse_node_config``) calls ``int()`` on every slot and returns
    them sorted and de-duplicated, so only ascending integer ids survive unchanged.
    """
    if not all(t.isdigit() for t in tokens):
        return False
    ids = [int(t) for t in tokens]
    return ids == sorted(set(ids))


def world_info(tokens: Sequence[str]) -> str:
    """``--world_info`` for ``deepspeed.launcher.launch``: one node, these devices.

    ``launch.py`` exports ``CUDA_VISIBLE_DEVICES=",".join(devices)`` to every rank and
    gives rank ``i`` ``LOCAL_RANK=i``, so rank ``i`` runs on the ``i``-th listed device,
    whatever form the entries take (integers in any order, ``GPU-`` or ``MIG-`` ids).
    """
    raw = json.dumps({"localhost": list(tokens)}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def rank_selection(kind: str, world_size: int,
                   visible: str | None = None) -> list[str]:
    """The launcher and its rank flags, up to (not including) ``--master_port``.

    - CPU ranks: ``deepspeed --num_accelerators=N``.
    - No ``CUDA_VISIBLE_DEVICES``: ``deepspeed --num_gpus=N`` (GPUs 0..N-1).
    - Ascending integer ids: ``deepspeed --include=localhost:a,b`` (the runner drops the
      variable once any rank flag is given, so the ids are named).
    - Anything ``--include`` cannot carry (UUIDs, MIG ids, ids out of order): DeepSpeed's
      per-node launcher ``python -m deepspeed.launcher.launch --world_info=…`` with the
      list as given, which it exports to the ranks as ``CUDA_VISIBLE_DEVICES``.
    """
    if kind != "cuda":
        return [*deepspeed_launcher(), f"--num_accelerators={world_size}"]
    tokens = visible_tokens(visible)[:world_size]
    if not tokens:
        return [*deepspeed_launcher(), f"--num_gpus={world_size}"]
    if include_expresses(tokens):
        return [*deepspeed_launcher(), f"--include=localhost:{','.join(tokens)}"]
    return [sys.executable, "-u", "-m", PER_NODE_LAUNCHER,
            f"--world_info={world_info(tokens)}", "--master_addr=127.0.0.1"]


def selection_note(kind: str, world_size: int, visible: str | None = None) -> str | None:
    """What the summary says when the per-node launcher replaces ``--include``."""
    tokens = visible_tokens(visible)[:world_size]
    if kind != "cuda" or not tokens or include_expresses(tokens):
        return None
    return (f"CUDA_VISIBLE_DEVICES={','.join(tokens)}: DeepSpeed's --include takes only "
            "integer ids and sorts them, so the ranks are started by "
            f"{PER_NODE_LAUNCHER} with this list as their CUDA_VISIBLE_DEVICES "
            "(rank i on the i-th entry)")


def build_command(spec: RunSpec, run_dir: Path, *, resume: bool = False,
                  master_port: int | None = None, master_addr: str | None = None,
                  extra: Sequence[str] = (), visible: str | None = None) -> list[str]:
    """The launcher command. The rank reads its decisions from RUN_DIR/run.json; the
    flags that repeat some of them are there for a reader of command.txt and for
    ``launch_deepspeed.sh`` users who override one (``--steps N``).

    A multi-node run names its hostfile; DeepSpeed's runner then starts
    ``deepspeed.launcher.launch`` on every host (pdsh over ssh by default)."""
    paths = rundir.RunPaths(run_dir)
    if spec.hostfile:
        where = [*deepspeed_launcher(), f"--hostfile={spec.hostfile}"]
        if master_addr:
            where.append(f"--master_addr={master_addr}")
    else:
        where = rank_selection(spec.accelerator, spec.world_size, visible)
    cmd = [*where,
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


def run_env(accel: Accelerator, world_size: int,
            visible: str | None = None) -> dict[str, str]:
    env = {"PYTHONUNBUFFERED": "1"}
    if accel.kind == "cuda":
        # `ds-wizard gpus` and --gpus number devices as NVML (nvidia-smi) does; CUDA's
        # default FASTEST_FIRST would give a mixed box's ranks other devices
        env["CUDA_DEVICE_ORDER"] = os.environ.get("CUDA_DEVICE_ORDER") or "PCI_BUS_ID"
    if visible is not None and accel.kind == "cuda":
        # --gpus: the launcher and a hand-run launch_deepspeed.sh see the same devices
        env["CUDA_VISIBLE_DEVICES"] = visible
    if accel.kind == "cpu":
        # CPU ranks even where GPUs exist (the TUI's CPU demo, tests on a GPU box)
        env["DS_ACCELERATOR"] = "cpu"
    if accel.kind == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # one rank per core share: more threads than cores makes CPU ranks crawl
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // world_size))
    return env


def command_text(command: Sequence[str], env: dict[str, str]) -> str:
    prefix = " ".join(f"{k}={shell_word(v, k)}" for k, v in sorted(env.items()))
    return (prefix + " " if prefix else "") + shell_words(command)


def write_script(path: Path, command: Sequence[str], env: dict[str, str]) -> None:
    """``launch_deepspeed.sh``: the launch, re-runnable by hand."""
    atomic_write_text(path, script_text(command, env))
    path.chmod(0o755)


def script_text(command: Sequence[str], env: dict[str, str]) -> str:
    """The text of ``launch_deepspeed.sh`` (ScriptValueError for a value it cannot hold)."""
    lines = ["#!/usr/bin/env bash",
             f"# Re-runs this run's launch by hand (ds-wizard {__version__}). Extra arguments",
             "# are passed to the training entry point, e.g. --resume or --steps N.",
             "set -euo pipefail",
             f"cd {shell_word(str(Path.cwd()), 'the working directory')}"]
    lines += [f"export {_env_name(k)}={shell_word(v, k)}" for k, v in sorted(env.items())]
    # a fixed port in a hand-run script could clash with a concurrent run; pick one now
    at = next((i for i, c in enumerate(command) if c.startswith("--master_port=")), 1)
    cmd = [c for c in command if not c.startswith("--master_port=")]
    lines.append(f'exec {shell_words(cmd[:at])} '
                 f'--master_port="$({shell_word(sys.executable, "the Python executable")} -c '
                 f"'import ds_wizard.launch.command as c; print(c.free_port())')\" "
                 f'{shell_words(cmd[at:])} "$@"')
    return "\n".join(lines) + "\n"


def write_hostfile(path: Path, topo: Topology) -> None:
    """The hosts a run uses, as DeepSpeed reads them (its --num_nodes/--num_gpus applied)."""
    atomic_write_text(path, hostfile_text(topo))


def hostfile_text(topo: Topology) -> str:
    lines = [f"# the nodes of this run (ds-wizard {__version__}): {topo.layout()}"]
    lines += [f"{_host_name(host)} slots={n}"
              for host, n in zip((h.name for h in topo.hosts), topo.ranks_per_node,
                                 strict=True)]
    return "\n".join(lines) + "\n"


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
        f"#SBATCH --job-name={sbatch_value(job_name, 'the job name')}",
        f"#SBATCH --nodes={int(topo.nodes)}",
        "#SBATCH --ntasks-per-node=1",
        *([f"#SBATCH --gpus-per-node={int(per_node)}"] if gpus else []),
        f"#SBATCH --output={sbatch_value(f'{root}/slurm-%j.out', 'the run directory')}",
        f"# Starts run {refuse_unscriptable(root.name, 'the run name')} on the nodes Slurm "
        f"allocates (ds-wizard {__version__}):",
        f"# writes {HOSTFILE_NAME} from SLURM_JOB_NODELIST, then runs DeepSpeed's launcher.",
        "# Extra arguments go to the training entry point, e.g. --resume or --steps N.",
        "set -euo pipefail",
        f"cd {shell_word(str(Path.cwd()), 'the working directory')}",
        ': "${SLURM_JOB_NODELIST:?run this script with sbatch (SLURM_JOB_NODELIST is unset)}"',
        f"HOSTFILE={shell_word(str(hostfile), 'the run directory')}",
        'HOSTS="$(scontrol show hostnames "$SLURM_JOB_NODELIST")"',
        f"printf '%s slots={int(per_node)}\\n' $HOSTS > \"$HOSTFILE.tmp\"",
        'mv "$HOSTFILE.tmp" "$HOSTFILE"',
        "MASTER_ADDR=\"$(printf '%s\\n' $HOSTS | head -n 1)\"",
    ]
    lines += [f"export {_env_name(k)}={shell_word(v, k)}" for k, v in sorted(env.items())]
    first = _first_flag(cmd)
    lines += [
        f'if [ -n "${{{DEEPSPEED_ENV}:-}}" ]; then LAUNCHER=("${DEEPSPEED_ENV}"); '
        f'else LAUNCHER=({shell_words(cmd[:first])}); fi',
        'exec "${LAUNCHER[@]}" --hostfile="$HOSTFILE" --master_addr="$MASTER_ADDR" '
        f'--master_port="${{MASTER_PORT:-29500}}" {shell_words(cmd[first:])} "$@"',
    ]
    return "\n".join(lines) + "\n"


def _env_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ScriptValueError(f"environment variable name {name!r} is not a shell name",
                               "use letters, digits and _ only")
    return name


def _host_name(name: str) -> str:
    # the hostfile is read by DeepSpeed's runner and its names reach pdsh/ssh command lines
    if not re.fullmatch(r"[A-Za-z0-9._:@\[\]-]{1,253}", name):
        raise ScriptValueError(f"host name {name!r} is not a host name",
                               "a host name is letters, digits and . - _ : @ [ ] only")
    return name


def _first_flag(cmd: Sequence[str]) -> int:
    """Where the runner's own flags start (after ``python -m deepspeed.launcher.runner``)."""
    for i, c in enumerate(cmd[1:], start=1):
        if c.startswith("--"):
            return i
    return len(cmd)


def write_sbatch(path: Path, run_dir: Path, command: Sequence[str], env: dict[str, str],
                 topo: Topology, *, gpus: bool) -> None:
    atomic_write_text(path, sbatch_for(run_dir, command, env, topo, gpus=gpus))
    path.chmod(0o755)


def sbatch_for(run_dir: Path, command: Sequence[str], env: dict[str, str], topo: Topology,
               *, gpus: bool) -> str:
    return sbatch_text(run_dir, command, env, topo, gpus=gpus,
                       job_name=f"ds-wizard-{run_dir.name}")
