"""Preparing a training run and supervising the ``deepspeed`` launcher (no torch here).

Used by ``ds-wizard launch`` and the TUI's launch screen::

    plan = prepare_run("tiny_mamba", None, steps=40)       # validates, creates runs/…/
    job = start(plan)                                      # Supervisor: its own process group
    for line in job.lines(): ...                           # or on_line= callback
    job.stop()                                             # graceful: ranks checkpoint
    code = job.wait()

    job, code, signum = run_foreground(plan, on_line=print)  # all of the above, plus
                                                           # SIGINT/SIGTERM/SIGHUP handling

Process model: ``deepspeed`` (runner) → ``deepspeed.launcher.launch`` → one
``python -m ds_wizard.train`` per rank, all in one new session/process group. The
supervisor never leaves the group behind: ``wait()`` returns only once no process of the
group is alive, killing stragglers when the launcher itself is gone. There is no detach
mode: closing ds-wizard stops the job (a run can be continued with ``--resume``). To run
unattended, start ``runs/…/launch_deepspeed.sh`` under ``setsid``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ds_wizard import __version__
from ds_wizard.core import runs
from ds_wizard.core.errors import DsWizardError
from ds_wizard.core.fsio import atomic_write_text

if TYPE_CHECKING:
    from ds_wizard.core.checker import CheckReport
    from ds_wizard.core.gpus import GpuReport
    from ds_wizard.core.presets import Preset
    from ds_wizard.core.schema import PresetSpec

BACKENDS = ("auto", "transformers", "mamba_ssm")
CPU_DEFAULT_RANKS = 2
GRACE_S = 60.0  # for the ranks to reach the end of a step and save a checkpoint
KILL_AFTER_S = 10.0
LINGER_S = 45.0  # how long the group may outlive the launcher before it is killed
# a dropped terminal (SIGHUP) must stop the job too: it runs in its own session, which
# the terminal's hang-up never reaches
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
TRAIN_MODULE = "ds_wizard.train"


class LaunchRefused(DsWizardError):
    """The run would fail; nothing was started."""


@dataclass(frozen=True)
class Accelerator:
    kind: str  # "cuda" | "cpu"
    count: int  # devices seen (0 for cpu)
    reason: str
    bf16: bool | None = None


def detect_accelerator(gpu_report: GpuReport | None = None) -> Accelerator:
    """CUDA if NVML sees a GPU, else CPU. Never imports torch."""
    if gpu_report is None:
        from ds_wizard.core.gpus import detect_gpus

        gpu_report = detect_gpus()
    if gpu_report.count:
        names = sorted({g.name for g in gpu_report.gpus})
        return Accelerator("cuda", gpu_report.count,
                           f"{gpu_report.count} GPU(s): {', '.join(names)}",
                           gpu_report.bf16_supported)
    return Accelerator("cpu", 0, gpu_report.reason or "no GPU found")


@dataclass
class RunPlan:
    """Everything about one launch, decided before any process starts."""

    preset_name: str
    spec: PresetSpec
    config: dict[str, Any]
    config_source: str | None  # the user's --config path, None when built from the preset
    world_size: int
    accelerator: Accelerator
    steps: int
    data: str | None = None
    data_dtype: str | None = None
    tokenizer: str | None = None
    backend: str = "auto"
    resume: bool = False
    resume_step: int | None = None
    run_dir: Path | None = None  # None for a dry run
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def paths(self) -> runs.RunPaths:
        if self.run_dir is None:
            raise ValueError("a dry-run plan has no run directory")
        return runs.RunPaths(self.run_dir)

    @property
    def command_text(self) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        return (env + " " if env else "") + shlex.join(self.command)


def world_size_for(num_gpus: int | None, accel: Accelerator) -> tuple[int, list[str]]:
    notes = []
    if accel.kind == "cuda":
        if num_gpus is None:
            return accel.count, [f"using all {accel.count} visible GPU(s)"]
        if num_gpus > accel.count:
            raise LaunchRefused(f"--num-gpus {num_gpus} but only {accel.count} GPU(s) are visible",
                                f"use --num-gpus {accel.count} or fewer")
    if num_gpus is None:
        notes.append(f"no GPU ({accel.reason}): running {CPU_DEFAULT_RANKS} CPU ranks")
        return CPU_DEFAULT_RANKS, notes
    if num_gpus < 1:
        raise LaunchRefused(f"--num-gpus must be at least 1, got {num_gpus}")
    if accel.kind == "cpu":
        notes.append(f"no GPU ({accel.reason}): running {num_gpus} CPU rank(s)")
    return num_gpus, notes


def resolve_config(
    spec: PresetSpec, preset_name: str, world_size: int, accel: Accelerator,
    config_path: str | Path | None = None,
) -> tuple[dict[str, Any], str | None]:
    """The user's config (which must pass check) or one built from the preset."""
    from ds_wizard.core.checker import check_config, load_config_file

    if config_path is not None:
        cfg = load_config_file(config_path)
        source: str | None = str(config_path)
    else:
        from ds_wizard.core.dsconfig import build_config, plan_batch

        precision = spec.train.precision
        if accel.kind == "cpu" and precision == "auto":
            precision = "fp32"  # CPU ranks have no fast 16-bit path
        cfg = build_config(spec, plan_batch(spec, world_size), precision=precision,
                           bf16_supported=accel.bf16)
        source = None
    if accel.kind == "cpu":
        from ds_wizard.core.jit_ops import with_torch_adam

        # torch's AdamW: the same update as DeepSpeed's CPU Adam, with nothing to compile
        cfg, _ = with_torch_adam(cfg)
    report = check_config(cfg, world_size)
    if not report.valid:
        what = source or f"the config built from preset {preset_name}"
        first = (f"DeepSpeed would stop with {report.deepspeed_error}"
                 if report.deepspeed_error else report.errors[0])
        more = [e for e in report.errors if not e.startswith("DeepSpeed would stop")]
        more = more[:2] if report.deepspeed_error else more[1:3]
        message = f"{what} refused before launch: {first}" + "".join(f"; {m}" for m in more)
        hint = _fix_hint(report, source, world_size)
        raise LaunchRefused(message, hint)
    return cfg, source


def _fix_hint(report: CheckReport, source: str | None, world_size: int) -> str:
    parts = []
    if report.suggestions:
        parts.append("suggested fix: " + report.suggestions[0].removeprefix("--keep micro: "))
    if source:
        parts.append(f"run `ds-wizard fix {shlex.quote(source)} --num-gpus {world_size}`")
    return "; ".join(parts) or "fix the config and try again"


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


def build_command(plan: RunPlan, *, master_port: int | None = None,
                  extra: Sequence[str] = ()) -> list[str]:
    paths = plan.paths
    cmd = [*deepspeed_launcher(), *rank_selection(plan.accelerator.kind, plan.world_size),
           f"--master_port={master_port or free_port()}",
           "--module", TRAIN_MODULE,
           "--run-dir", str(paths.root.resolve()),
           "--deepspeed_config", str(paths.config.resolve()),
           "--preset", str(paths.preset.resolve()),
           "--steps", str(plan.steps),
           "--backend", plan.backend]
    if plan.data:
        cmd += ["--data", plan.data]
    if plan.data_dtype:
        cmd += ["--data-dtype", plan.data_dtype]
    if plan.tokenizer:
        cmd += ["--tokenizer", plan.tokenizer]
    if plan.resume:
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


def prepare_run(
    preset: str | Preset | None = None,
    num_gpus: int | None = None,
    *,
    sets: Sequence[str] = (),
    config_path: str | Path | None = None,
    data: str | Path | None = None,
    data_dtype: str | None = None,
    tokenizer: str | Path | None = None,
    steps: int | None = None,
    resume: str | Path | None = None,
    runs_dir: str | Path = "runs",
    backend: str = "auto",
    accelerator: Accelerator | None = None,
    gpu_report: GpuReport | None = None,
    master_port: int | None = None,
    extra: Sequence[str] = (),
    dry_run: bool = False,
) -> RunPlan:
    """Validate everything and (unless ``dry_run``) create the run directory.

    Raises a DsWizardError (``LaunchRefused`` for a config DeepSpeed would reject) before
    anything is written or started.
    """
    if backend not in BACKENDS:
        raise DsWizardError(f"unknown backend {backend!r}",
                            "choose auto, transformers or mamba_ssm")
    accel = accelerator or detect_accelerator(gpu_report)
    if dry_run and accel.kind == "cpu" and num_gpus is not None and resume is None:
        # `--num-gpus 4 --dry-run` on a laptop checks a plan for a GPU machine
        accel = Accelerator("cuda", num_gpus, "none visible here: planning for a GPU machine")
    if resume is not None:
        given = {"--preset": preset, "--set": sets, "--config": config_path, "--data": data,
                 "--data-dtype": data_dtype, "--tokenizer": tokenizer}
        if clash := [flag for flag, value in given.items() if value]:
            # the run's own preset snapshot, config and data are what its checkpoint fits
            raise DsWizardError(
                f"--resume continues a run as it was launched; {', '.join(clash)} cannot "
                "change it", "drop them, or start a new run with them")
        plan = _resume_plan(resume, runs_dir, num_gpus, steps, accel)
        if backend != "auto":
            plan.backend = backend
    else:
        if preset is None:
            raise DsWizardError("no preset given", "pass --preset NAME (see `ds-wizard presets`)")
        from ds_wizard.core.overrides import load_with_overrides

        loaded = load_with_overrides(preset, sets)
        ws, notes = world_size_for(num_gpus, accel)
        cfg, source = resolve_config(loaded.spec, loaded.name, ws, accel, config_path)
        total = steps if steps is not None else loaded.spec.train.total_steps
        if total < 1:
            raise DsWizardError(f"--steps must be at least 1, got {total}")
        plan = RunPlan(
            loaded.name, loaded.spec, cfg, source, ws, accel, total,
            data=_abs(data), data_dtype=data_dtype, tokenizer=_abs(tokenizer),
            backend=backend, notes=notes,
        )
    _validate_data(plan)
    plan.env = run_env(accel, plan.world_size)
    if dry_run:
        return plan
    if plan.accelerator.kind == "cpu":
        from ds_wizard.core.host_fit import check_cpu_ranks

        check_cpu_ranks(plan.config, plan.spec, plan.world_size, plan.preset_name)
    if plan.run_dir is None:
        plan.run_dir = runs.create_run_dir(runs_dir, plan.preset_name)
        _write_run_files(plan)
    plan.command = build_command(plan, master_port=master_port, extra=extra)
    paths = plan.paths
    atomic_write_text(paths.command, plan.command_text + "\n")
    if not paths.script.exists():
        _write_script(plan)
    return plan


def _abs(p: str | Path | None) -> str | None:
    return None if p is None else str(Path(p).expanduser().resolve())


def _validate_data(plan: RunPlan) -> None:
    """Tokenizer, data and vocabulary checks, the same ones each rank repeats."""
    from ds_wizard.core.params import padded_vocab
    from ds_wizard.train.data import ShardedSamples, load_tokenizer, load_tokens

    model = plan.spec.model
    vocab = padded_vocab(model.vocab_size, model.pad_vocab_size_multiple)
    tok = load_tokenizer(plan.tokenizer)
    source = load_tokens(plan.data, tok, vocab, dtype=plan.data_dtype)
    shard = ShardedSamples(source.tokens, plan.spec.train.seq_len, 0, plan.world_size)
    plan.notes.append(f"data: {source.description}, {len(source.tokens):,} tokens "
                      f"({tok.name} tokenizer), {shard.per_rank:,} samples per rank per epoch")


def _write_run_files(plan: RunPlan) -> None:
    from ds_wizard.core.dsconfig import dumps
    from ds_wizard.core.preset_store import to_toml

    paths = plan.paths
    atomic_write_text(paths.config, dumps(plan.config))
    atomic_write_text(paths.preset, to_toml(plan.spec, [f"snapshot of preset {plan.preset_name} "
                                                        "as launched (--set applied)"]))
    runs.write_run_info(paths, {
        "created": datetime.now().isoformat(timespec="seconds"),
        "ds_wizard_version": __version__,
        "preset": plan.preset_name,
        "config_source": plan.config_source,
        "world_size": plan.world_size,
        "accelerator": plan.accelerator.kind,
        "steps": plan.steps,
        "data": plan.data,
        "data_dtype": plan.data_dtype,
        "tokenizer": plan.tokenizer,
        "backend": plan.backend,
        "cwd": str(Path.cwd()),
    })


def _write_script(plan: RunPlan) -> None:
    lines = ["#!/usr/bin/env bash",
             f"# Re-runs this run's launch by hand (ds-wizard {__version__}). Extra arguments",
             "# are passed to the training entry point, e.g. --resume or --steps N.",
             "set -euo pipefail",
             f"cd {shlex.quote(str(Path.cwd()))}"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(plan.env.items())]
    # a fixed port in a hand-run script could clash with a concurrent run; pick one now
    cmd = [c for c in plan.command if not c.startswith("--master_port=")]
    lines.append(f'exec {shlex.join(cmd[:1])} '
                 f'--master_port="$({shlex.quote(sys.executable)} -c '
                 f"'import ds_wizard.launcher as l; print(l.free_port())')\" "
                 f'{shlex.join(cmd[1:])} "$@"')
    paths = plan.paths
    atomic_write_text(paths.script, "\n".join(lines) + "\n")
    paths.script.chmod(0o755)


def _resume_plan(ref: str | Path, runs_dir: str | Path, num_gpus: int | None,
                 steps: int | None, accel: Accelerator) -> RunPlan:
    from ds_wizard.core.presets import read_preset_file

    run_dir = runs.resolve_run_ref(str(ref), runs_dir)
    info = runs.read_run_info(run_dir)
    paths = runs.RunPaths(run_dir)
    ckpt = runs.latest_complete(paths.checkpoints)
    if ckpt is None:
        raise runs.RunError(f"{run_dir} has no complete checkpoint to resume from",
                            "start a new run instead")
    ws = int(info["world_size"])
    if num_gpus is not None and num_gpus != ws:
        raise runs.RunError(
            f"{run_dir} was trained on {ws} rank(s); ZeRO checkpoints are split per rank",
            f"resume with --num-gpus {ws} (or drop --num-gpus)")
    if info.get("accelerator") == "cuda" and accel.kind != "cuda":
        raise runs.RunError(f"{run_dir} ran on CUDA GPUs but none are visible here")
    total = steps if steps is not None else int(info["steps"])
    if total <= ckpt.step:
        raise runs.RunError(f"{run_dir} is already at step {ckpt.step}",
                            f"pass --steps N with N > {ckpt.step} to train further")
    from ds_wizard.core.checker import load_config_file

    preset = read_preset_file(paths.preset, str(info.get("preset", "resumed")))
    cfg = load_config_file(paths.config)
    return RunPlan(
        str(info.get("preset", preset.name)), preset.spec, cfg, info.get("config_source"),
        ws, replace(accel, kind=str(info.get("accelerator", accel.kind))), total,
        data=info.get("data"), data_dtype=info.get("data_dtype"),
        tokenizer=info.get("tokenizer"), backend=str(info.get("backend", "auto")),
        resume=True, resume_step=ckpt.step, run_dir=run_dir,
        notes=[f"resuming {run_dir} from {ckpt.tag}: next step {ckpt.step + 1}, "
               f"training to step {total}"],
    )


def summary_lines(plan: RunPlan, *, dry_run: bool = False) -> list[str]:
    """The source document's ✅ summary for this plan, plus what would be launched."""
    from ds_wizard.core.params import count_params
    from ds_wizard.core.report import model_type
    from ds_wizard.core.report import summary_lines as report_lines

    lines = []
    if plan.config_source is None:
        lines.append(f"✅ Config generated from preset {plan.preset_name} for "
                     f"{plan.world_size} {'GPU' if plan.accelerator.kind == 'cuda' else 'CPU'} "
                     f"rank(s)")
    lines += report_lines(plan.config, plan.world_size, model_type=model_type(
        plan.spec.model.arch), params=count_params(plan.spec.model),
        config_source=plan.config_source, dry_run=dry_run,
        device="GPU" if plan.accelerator.kind == "cuda" else "CPU")
    return lines


def dry_run_text(plan: RunPlan) -> str:
    lines = summary_lines(plan, dry_run=True)
    lines.append("")
    lines += [f"ℹ️  {n}" for n in plan.notes]
    lines.append(f"ℹ️  would train {plan.steps} step(s) with backend {plan.backend} "
                 f"on {plan.world_size} {plan.accelerator.kind} rank(s); nothing was started")
    return "\n".join(lines)


# -- supervision --------------------------------------------------------------------------


def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    import psutil

    out = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if os.getpgid(proc.pid) == pgid:
                out.append(proc.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return sorted(out)


def is_rank_cmdline(argv: Sequence[str]) -> bool:
    """``python -u -m ds_wizard.train …`` (the runner and launch.py only mention it)."""
    return any(a == "-m" and b == TRAIN_MODULE for a, b in itertools.pairwise(argv))


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class Supervisor:
    """Runs one launcher command in its own process group and never leaves it behind.

    Satisfies the TUI's ``Job`` protocol: ``pid``, ``command``, ``run_dir``, ``lines()``,
    ``stop()``, ``wait()``.
    """

    _EOF = object()

    def __init__(self, command: Sequence[str], *, env: dict[str, str] | None = None,
                 cwd: str | Path | None = None, log_path: str | Path | None = None,
                 run_dir: Path | None = None,
                 on_line: Callable[[str], None] | None = None) -> None:
        self.argv = list(command)
        self.command = shlex.join(self.argv)
        self.run_dir = run_dir
        self._env = {**os.environ, **(env or {})}
        self._cwd = cwd
        self._log_path = Path(log_path) if log_path else None
        self._on_line = on_line
        self._queue: queue.Queue[Any] = queue.Queue()
        self._reader: threading.Thread | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.stop_requested = False
        self.killed = False
        self.returncode: int | None = None
        self.tail: list[str] = []

    # -- start / output -------------------------------------------------------------------
    def start(self) -> Supervisor:
        try:
            self._proc = subprocess.Popen(
                self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=self._env, cwd=self._cwd,
                start_new_session=True,  # own session + process group: signals reach all
            )
        except OSError as exc:
            raise DsWizardError(f"cannot start {self.argv[0]}: {exc.strerror or exc}",
                                "is DeepSpeed installed in this environment?") from exc
        self._reader = threading.Thread(target=self._read, daemon=True, name="job-output")
        self._reader.start()
        return self

    @property
    def pid(self) -> int:
        assert self._proc is not None, "not started"
        return self._proc.pid

    @property
    def pgid(self) -> int:
        return self.pid  # start_new_session makes the leader's pid the group id

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        log = self._log_path.open("a", encoding="utf-8") if self._log_path else None
        try:
            for raw in self._proc.stdout:
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                if log is not None:
                    log.write(line + "\n")
                    log.flush()
                self.tail = [*self.tail[-49:], line]
                if self._on_line is not None:
                    self._on_line(line)
                self._queue.put(line)
        finally:
            if log is not None:
                log.close()
            self._queue.put(self._EOF)

    def lines(self) -> Iterator[str]:
        """Output lines as they come, until every process closed its output."""
        while True:
            item = self._queue.get()
            if item is self._EOF:
                self._queue.put(self._EOF)  # later callers see the end too
                return
            yield item

    # -- state ----------------------------------------------------------------------------
    def pids(self) -> list[int]:
        """Every live process of the job (launcher and ranks)."""
        return group_pids(self.pgid) if self._proc is not None else []

    def rank_pids(self) -> list[int]:
        """The training ranks among :meth:`pids` (not the runner, not launch.py)."""
        import psutil

        out = []
        for pid in self.pids():
            with contextlib.suppress(psutil.Error):
                if is_rank_cmdline(psutil.Process(pid).cmdline()):
                    out.append(pid)
        return out

    # -- stopping -------------------------------------------------------------------------
    def stop(self, grace_s: float = GRACE_S, kill_after_s: float = KILL_AFTER_S) -> int | None:
        """Graceful stop: SIGINT to the ranks (they checkpoint and exit 0, and the launcher
        with them), then SIGTERM and SIGKILL to the whole group if it outlives ``grace_s``.

        Only the ranks get the SIGINT: DeepSpeed's launch.py answers any signal by
        terminating the ranks and killing them 30 s later, which would cut a checkpoint
        that needs longer than that short of ``grace_s``. Before the ranks exist, every
        process but the runner gets it (the runner has no handler and would only print a
        KeyboardInterrupt traceback; it exits when its child does).
        """
        if self._proc is None:
            return None
        self.stop_requested = True
        targets = self.rank_pids() or [p for p in self.pids() if p != self.pid]
        if targets:
            for pid in targets:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGINT)
        else:
            _signal_group(self.pgid, signal.SIGTERM)
        if self._wait_group(grace_s):
            return self.wait()
        _signal_group(self.pgid, signal.SIGTERM)
        if not self._wait_group(kill_after_s):
            self.killed = True
            _signal_group(self.pgid, signal.SIGKILL)
        return self.wait()

    def kill(self) -> None:
        if self._proc is not None:
            self.killed = True
            _signal_group(self.pgid, signal.SIGKILL)

    def _wait_group(self, timeout: float) -> bool:
        """True once the leader exited and the group is empty, within ``timeout``."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None and not self.pids():
                return True
            time.sleep(0.2)
        return self._proc.poll() is not None and not self.pids()

    def wait(self, timeout: float | None = None) -> int:
        """The launcher's exit code, once no process of the group is left.

        If ranks outlive the launcher by ``LINGER_S`` they are killed: the supervisor
        never returns with orphans running.
        """
        assert self._proc is not None, "not started"
        code = self._proc.wait(timeout=timeout)
        if not self._wait_group(LINGER_S):
            self.killed = True
            _signal_group(self.pgid, signal.SIGKILL)
            self._wait_group(5.0)
        if self._reader is not None:
            self._reader.join(timeout=5.0)
        self.returncode = code
        return code


def start(plan: RunPlan, *, on_line: Callable[[str], None] | None = None) -> Supervisor:
    """Start a prepared plan under a Supervisor (output teed into the run's train.log)."""
    paths = plan.paths
    with paths.log.open("a", encoding="utf-8") as fh:
        fh.write(f"$ {plan.command_text}\n")
    return Supervisor(plan.command, env=plan.env, log_path=paths.log, run_dir=plan.run_dir,
                      on_line=on_line).start()


def run_foreground(
    plan: RunPlan, *, on_line: Callable[[str], None], grace_s: float = GRACE_S,
    on_signal: Callable[[int], None] | None = None,
) -> tuple[Supervisor, int, int | None]:
    """Start ``plan``, hand each output line to ``on_line``, and return once no process of
    the job is left: the job, the launcher's exit code, and the first stop signal (or None).

    The first SIGINT, SIGTERM or SIGHUP stops the job gracefully (``on_signal`` is told);
    another one kills it. The job runs in its own session, so nothing but this function
    stops it when this process ends: the handlers go in before it starts, and an
    exception (a closed stdout, a failing ``on_line``) stops it before propagating.
    Call from the main thread (signal handlers).
    """
    signals: list[int] = []
    job: Supervisor | None = None

    def begin_stop(signum: int) -> None:
        assert job is not None
        # stop() waits for the group: off this thread, so the output keeps flowing
        threading.Thread(target=job.stop, kwargs={"grace_s": grace_s}, daemon=True,
                         name="job-stop").start()
        if on_signal is not None:
            on_signal(signum)

    def handle(signum: int, frame: object) -> None:
        signals.append(signum)
        if job is None:
            return  # start() is still running; the stop begins as soon as it returns
        if len(signals) == 1:
            begin_stop(signum)
        else:
            job.kill()

    previous = {s: signal.signal(s, handle) for s in STOP_SIGNALS}
    try:
        job = start(plan)
        try:
            if signals:
                begin_stop(signals[0])
            for line in job.lines():
                on_line(line)
            code = job.wait()
        except BaseException:
            job.stop(grace_s=grace_s)
            raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return job, code, signals[0] if signals else None


def rank_failure(lines: Sequence[str]) -> str | None:
    """The launcher's report of a failed rank, made readable, from the job's output."""
    for line in reversed(lines):
        if "exits with return code" in line:
            code = line.rsplit("=", 1)[-1].strip()
            with contextlib.suppress(ValueError):
                value = int(code)
                if value < 0:
                    name = signal.Signals(-value).name
                    why = {"SIGKILL": " (out of memory, or killed by hand)",
                           "SIGSEGV": " (a crash in native code)"}.get(name, "")
                    return f"a rank was killed by {name}{why}"
                return f"a rank exited with code {value}"
    return None


def describe_exit(code: int, sup: Supervisor) -> str:
    if sup.stop_requested:
        return "stopped on request"
    if code == 0:
        return "finished"
    failure = rank_failure(sup.tail)
    base = failure or f"the job exited with code {code}"
    return f"{base}; the launcher stopped the other ranks"
