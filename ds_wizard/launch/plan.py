"""Preparing a training run: one immutable :class:`PreparedRun`, built in one step.

    plan = prepare_run(LaunchRequest("tiny_mamba", steps=40))   # validates, creates runs/…/

The config comes from the same door as ``--auto``: :func:`core.auto.auto_configure`, fitted
to the GPU memory (detected, or ``--gpu-memory``), unless the user gives ``--config FILE``,
which must pass ``check``. The decision is written once into ``run.json``
(:class:`core.runspec.RunSpec`); the ranks read it from there.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ds_wizard import __version__
from ds_wizard.core.base.defaults import CPU_DEFAULT_RANKS, HEADROOM, RUNS_DIR
from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.base.fsio import atomic_write_text
from ds_wizard.core.batch.topology import Topology, resolve_topology
from ds_wizard.core.plan.backends import (
    BACKENDS,
    DEFAULT_BACKEND,
    BackendDecision,
    resolve_backend,
)
from ds_wizard.core.runs import rundir
from ds_wizard.core.runs.runspec import (
    Accelerator,
    RunInfo,
    RunSpec,
    accelerator_from,
    read_run_info,
    spec_from_config,
    write_run_info,
)
from ds_wizard.launch.command import (
    HOSTFILE_NAME,
    SBATCH_NAME,
    build_command,
    check_scriptable,
    command_text,
    run_env,
    sbatch_for,
    sbatch_value,
    script_text,
    selection_note,
    visible_tokens,
    write_hostfile,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ds_wizard.core.check.checker import CheckReport
    from ds_wizard.core.plan.gpus import GpuInventory
    from ds_wizard.core.presets.lookup import Preset
    from ds_wizard.core.presets.schema import PresetSpec
    from ds_wizard.launch.stall_monitor import StallOptions


class LaunchRefused(DsWizardError):
    """The run would fail; nothing was started."""


def detect_accelerator(gpu_report: GpuInventory | None = None) -> Accelerator:
    """CUDA if NVML sees a GPU, else CPU. Never imports torch."""
    if gpu_report is None:
        from ds_wizard.core.plan.gpus import detect_gpus

        gpu_report = detect_gpus()
    return accelerator_from(gpu_report)


@dataclass(frozen=True)
class LaunchRequest:
    """What the user asked for (CLI flags, TUI choices); :func:`prepare_run` decides."""

    preset: str | Preset | None = None
    num_gpus: int | None = None
    sets: Sequence[str] = ()
    config_path: str | Path | None = None
    data: str | Path | None = None
    data_dtype: str | None = None
    tokenizer: str | Path | None = None
    steps: int | None = None
    resume: str | Path | None = None
    runs_dir: str | Path = RUNS_DIR
    backend: str = DEFAULT_BACKEND
    gpu_memory: str | None = None  # "80GiB"; default: the smallest detected GPU
    headroom: float = HEADROOM
    accelerator: Accelerator | None = None
    gpu_report: GpuInventory | None = None
    master_port: int | None = None
    extra: Sequence[str] = ()
    dry_run: bool = False
    # more than one node: a DeepSpeed hostfile, or --slurm with --num-nodes
    num_nodes: int | None = None
    gpus_per_node: int | None = None
    hostfile: str | Path | None = None
    slurm: bool = False  # write an sbatch script; the job starts when Slurm runs it
    gpus: str | None = None  # the devices, as CUDA_VISIBLE_DEVICES lists them; None: its value
    # a resume on another world size (launch.reshape): the global batch to train with when
    # the run's own cannot be split over the new ranks; where conversion progress goes
    global_batch: int | None = None
    progress: Callable[[str], None] | None = None
    measure: bool = False  # a `ds-wizard tune` candidate (RunSpec.measure)
    # the doctor's fast checks (kernels, ops, host RAM, disk) refuse a launch that cannot
    # run, before any rank starts (--no-doctor skips them)
    doctor: bool = True
    master_addr: str | None = None  # multi-node: default the hostfile's first host
    check_data: bool = True  # read the data (the doctor skips it: seconds of file walking)
    # issue 22: the stall rule (--stall-after; None: the accelerator's default) and action
    stall_after: str | None = None
    on_stall: str = "wait"


@dataclass(frozen=True)
class PreparedRun:
    """Everything about one launch, decided before any process starts."""

    run: RunSpec
    spec: PresetSpec
    config: dict[str, Any]
    accelerator: Accelerator
    resume: bool = False
    resume_step: int | None = None
    run_dir: Path | None = None  # None for a dry run
    command: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    topology: Topology | None = None
    sbatch: Path | None = None  # the sbatch script, for a --slurm run (not started here)
    visible: str | None = None  # --gpus: the device list given on the command line
    kernels: Any = None  # core.runs.doctor.KernelProbe: the rank's imports, run here
    optimizer: Any = None  # core.runs.doctor.OptimizerDecision
    doctor: Any = None  # core.runs.doctor.DoctorReport of the fast checks, when run
    stall: StallOptions | None = None  # what the supervisor watches for (issue 22)

    @property
    def multi_node(self) -> bool:
        return self.run.nodes > 1

    @property
    def preset_name(self) -> str:
        return self.run.preset

    @property
    def config_source(self) -> str | None:
        return self.run.config_source

    @property
    def world_size(self) -> int:
        return self.run.world_size

    @property
    def steps(self) -> int:
        return self.run.steps

    @property
    def backend(self) -> str:
        return self.run.backend

    @property
    def paths(self) -> rundir.RunPaths:
        if self.run_dir is None:
            raise ValueError("a dry-run plan has no run directory")
        return rundir.RunPaths(self.run_dir)

    @property
    def command_text(self) -> str:
        return command_text(self.command, self.env)


def world_size_for(num_gpus: int | None, accel: Accelerator, *, num_nodes: int | None = None,
                   gpus_per_node: int | None = None, hostfile: str | Path | None = None,
                   ) -> tuple[Topology, list[str]]:
    """Nodes × ranks per node for this launch, through :func:`core.topology.resolve_topology`.

    One node: every visible GPU by default (``--num-gpus`` may take fewer), or
    CPU_DEFAULT_RANKS CPU ranks without a GPU. More nodes: the hostfile, or ``--num-nodes``
    with the GPUs per node (the GPUs seen here, when this machine is one of them).
    """
    notes: list[str] = []
    multi = hostfile is not None or (num_nodes or 1) > 1
    if not multi and gpus_per_node is not None:
        if num_gpus is not None and num_gpus != gpus_per_node:
            raise LaunchRefused(f"--num-gpus {num_gpus} and --gpus-per-node {gpus_per_node} "
                                "disagree on one node", "give one of them")
        num_gpus = gpus_per_node
    if multi:
        topo = resolve_topology(num_gpus=num_gpus, num_nodes=num_nodes,
                                gpus_per_node=gpus_per_node, hostfile=hostfile,
                                detected=accel.count if accel.kind == "cuda" else None,
                                default_ranks=1 if accel.kind == "cpu" else None,
                                default_note="1 CPU rank per node")
        notes.append(f"{topo.layout()} ({topo.source})")
        return topo, notes
    if accel.kind == "cuda":
        if num_gpus is None:
            return (resolve_topology(num_gpus=accel.count),
                    [f"using all {accel.count} visible GPU(s)"])
        if num_gpus > accel.count:
            raise LaunchRefused(f"--num-gpus {num_gpus} but only {accel.count} GPU(s) are visible",
                                f"use --num-gpus {accel.count} or fewer")
    if num_gpus is None:
        notes.append(f"no GPU ({accel.reason}): running {CPU_DEFAULT_RANKS} CPU ranks")
        return resolve_topology(num_gpus=CPU_DEFAULT_RANKS), notes
    if num_gpus < 1:
        raise LaunchRefused(f"--num-gpus must be at least 1, got {num_gpus}")
    if accel.kind == "cpu":
        notes.append(f"no GPU ({accel.reason}): running {num_gpus} CPU rank(s)")
    return resolve_topology(num_gpus=num_gpus), notes


def nodes_accelerator(accel: Accelerator, topo: Topology) -> Accelerator:
    """A login node without GPUs plans for GPU nodes, unless DS_ACCELERATOR=cpu says CPU."""
    if accel.kind == "cuda" or os.environ.get("DS_ACCELERATOR") == "cpu":
        return accel
    return Accelerator("cuda", topo.gpus_per_node,
                       "no GPU on this machine: planning for the nodes' GPUs")


def check_mig(report: GpuInventory | None, world_size: int, visible: str | None = None) -> None:
    """Refuse what CUDA cannot run on MIG instances; say nothing otherwise."""
    if report is None or not report.mig:
        return
    if world_size > 1:
        # CUDA enumerates one MIG instance per process, and DeepSpeed's launcher gives
        # every rank the same device list, so rank 1 would find no device
        raise LaunchRefused(
            f"{world_size} ranks on MIG instances: a CUDA process sees only one MIG "
            "instance, and every rank gets the same device list",
            "train one rank on one instance: --num-gpus 1 with CUDA_VISIBLE_DEVICES=MIG-…, "
            "or use whole GPUs")
    if not visible_tokens(visible):
        first = report.gpus[0].uuid
        raise LaunchRefused(
            "MIG instances are visible but CUDA_VISIBLE_DEVICES does not name one",
            f"name the instance: CUDA_VISIBLE_DEVICES={first} ds-wizard launch …")


def device_notes(report: GpuInventory | None, accel: Accelerator, world_size: int,
                 visible: str | None = None) -> list[str]:
    """Skipped devices, the CUDA order and how the ranks get their devices, for the summary;
    refuses multi-rank MIG (:func:`check_mig`)."""
    if accel.kind != "cuda" or report is None:
        return []
    check_mig(report, world_size, visible)
    notes = [f"skipped {s}" for s in report.skipped] + list(report.notes)
    if (note := selection_note(accel.kind, world_size, visible)) is not None:
        notes.append(note)
    return notes


def backend_decision(backend: str, accel: Accelerator, arch: str,
                     report: GpuInventory | None = None) -> BackendDecision:
    """The kernels the ranks will run, by the rule each rank applies (core.runspec): the
    packages installed here decide when the GPUs are this machine's."""
    here = accel.kind == "cuda" and report is not None and report.count > 0
    cc = min(g.compute_capability for g in report.gpus) if here and report else None
    return resolve_backend(backend, cuda=accel.kind == "cuda", arch=arch, here=here,
                           compute_capability=cc)


def kernel_backend(backend: str, accel: Accelerator, arch: str = "mamba2",
                   report: GpuInventory | None = None) -> str:
    """The kernels the memory estimate assumes for ``backend`` on ``accel``."""
    return backend_decision(backend, accel, arch, report).name


def resolve_config(
    preset: Preset, world_size: int, accel: Accelerator,
    config_path: str | Path | None = None, *, gpu_report: GpuInventory | None = None,
    gpu_memory: str | None = None, headroom: float = HEADROOM, backend: str = DEFAULT_BACKEND,
) -> tuple[dict[str, Any], str | None]:
    """The user's config (which must pass check) or the one ``--auto`` would build."""
    from ds_wizard.core.check.checker import check_config, load_config_file

    if config_path is not None:
        cfg = load_config_file(config_path)
        source: str | None = str(config_path)
    else:
        from ds_wizard.core.config.auto import auto_configure
        from ds_wizard.core.plan.fit import gpu_memory_from
        from ds_wizard.core.plan.measured import here_entry

        report = gpu_report if accel.kind == "cuda" else None
        cfg = auto_configure(
            preset, world_size, gpu_report=report,
            gpu_memory=gpu_memory_from(gpu_memory, report), headroom=headroom,
            backend=kernel_backend(backend, accel, preset.spec.model.arch, report),
            device=accel.kind,
            # planning for this machine: what `ds-wizard tune` measured here decides
            measured=here_entry(preset.spec, world_size, report) if gpu_memory is None
            else None,
        ).config
        source = None
    if accel.kind == "cpu":
        from ds_wizard.core.runs.jit_ops import with_torch_adam

        # torch's AdamW: the same update as DeepSpeed's CPU Adam, with nothing to compile
        cfg, _ = with_torch_adam(cfg)
    report_ = check_config(cfg, world_size)
    if report_.unmirrored:
        from ds_wizard.deepcheck import settle

        settle(report_, cfg, world_size)
    if not report_.valid:
        what = source or f"the config built from preset {preset.name}"
        first = (f"DeepSpeed would stop with {report_.deepspeed_error}"
                 if report_.deepspeed_error else report_.errors[0])
        more = [e for e in report_.errors if not e.startswith("DeepSpeed would stop")]
        more = more[:2] if report_.deepspeed_error else more[1:3]
        message = f"{what} refused before launch: {first}" + "".join(f"; {m}" for m in more)
        raise LaunchRefused(message, _fix_hint(report_, source, world_size))
    return cfg, source


def measured_notes(spec: PresetSpec, ws: int, report: GpuInventory | None, accel: Accelerator,
                   gpu_memory: str | None, source: str | None) -> list[str]:
    """"measured here" for the summary, when `ds-wizard tune` measured this machine."""
    if gpu_memory is not None or source is not None:
        return []
    from ds_wizard.core.plan.measured import here_entry

    entry = here_entry(spec, ws, report if accel.kind == "cuda" else None)
    return [f"{entry.line()}; its choice is used"] if entry is not None else []


def _deep_check(cfg: dict[str, Any], world_size: int, what: str) -> None:
    """DeepSpeed's own parser has the last word before any process starts."""
    from ds_wizard.deepcheck import deep_check

    verdict = deep_check(cfg, world_size)
    if not verdict.accepted:
        raise LaunchRefused(f"{what} refused before launch: {verdict.line()}",
                            "run `ds-wizard check --deep` on it, fix it and try again")


def complete_config(cfg: dict[str, Any], preset: Preset, world_size: int,
                    source: str | None) -> tuple[dict[str, Any], list[str]]:
    """What the training loop needs on top of what DeepSpeed accepts (core.completeness):
    the preset's optimizer for a config without one, or a refusal before anything starts."""
    from ds_wizard.core.check.checker import check_config
    from ds_wizard.core.config.completeness import complete_for_training

    done = complete_for_training(cfg, preset.spec, check_config(cfg, world_size))
    return done.config, [f"{source or 'config'}: {n}" for n in done.notes]


def _fix_hint(report: CheckReport, source: str | None, world_size: int) -> str:
    parts = []
    if report.suggestions:
        # a suggestion is a command followed by "# <the triple it gives>"
        parts.append("suggested fix: " + report.suggestions[0].partition("# ")[2])
    if source:
        parts.append(f"run `ds-wizard fix {shlex.quote(source)} --num-gpus {world_size}`")
    return "; ".join(parts) or "fix the config and try again"


def prepare_run(request: LaunchRequest) -> PreparedRun:
    """Validate everything and (unless ``request.dry_run``) create the run directory.

    Raises a DsWizardError (``LaunchRefused`` for a config DeepSpeed would reject) before
    anything is written or started.
    """
    r = request
    if not r.dry_run:
        _check_scriptable(r, None, None)  # the cheap refusals first, before any import
    if r.backend not in BACKENDS:
        raise DsWizardError(f"unknown backend {r.backend!r}",
                            f"choose {', '.join(BACKENDS)}")
    report = r.gpu_report
    if report is None and r.accelerator is None:
        from ds_wizard.core.plan.gpus import detect_gpus

        # the ranks get CUDA_DEVICE_ORDER=PCI_BUS_ID (launch.command.run_env): number the
        # GPUs the same way here, unless the user chose an order
        os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
        report = detect_gpus() if r.gpus is None else detect_gpus(visible=r.gpus)
    accel = r.accelerator or accelerator_from(report)
    if r.dry_run and r.accelerator is None and accel.kind == "cpu" and r.num_gpus is not None \
            and r.resume is None:
        # `--num-gpus 4 --dry-run` on a laptop checks a plan for a GPU machine
        accel = Accelerator("cuda", r.num_gpus, "none visible here: planning for a GPU machine")
    if r.resume is not None:
        return _resume(r, accel)
    if r.preset is None:
        raise DsWizardError("no preset given", "pass --preset NAME (see `ds-wizard presets`)")
    from ds_wizard.core.presets.overrides import load_with_overrides

    loaded = load_with_overrides(r.preset, r.sets)
    topo, notes = world_size_for(r.num_gpus, accel, num_nodes=r.num_nodes,
                                 gpus_per_node=r.gpus_per_node, hostfile=r.hostfile)
    if r.slurm and r.hostfile is not None:
        raise DsWizardError("--slurm builds the hostfile from the nodes Slurm allocates",
                            "drop --hostfile, give --num-nodes N and --gpus-per-node G")
    if topo.multi_node:
        if r.accelerator is None:
            accel = nodes_accelerator(accel, topo)
        if topo.hostfile is None and not r.slurm and not r.dry_run:
            raise LaunchRefused(f"{topo.layout()}: DeepSpeed needs the nodes' names",
                                "pass --hostfile FILE (`host slots=N` lines), or --slurm to "
                                "write an sbatch script")
    ws = topo.total_ranks
    notes += device_notes(report, accel, ws, r.gpus)
    from ds_wizard.launch import doctor

    # decided once, here, by the rank's own imports: the plan is sized for what will run
    decision, kernels = doctor.rank_backend(r.backend, accel, loaded.spec.model.arch, report)
    notes.append(f"backend {decision.name}: {decision.reason}")
    cfg, source = resolve_config(loaded, ws, accel, r.config_path, gpu_report=report,
                                 gpu_memory=r.gpu_memory, headroom=r.headroom,
                                 backend=decision.name if kernels is not None else r.backend)
    cfg, completed = complete_config(cfg, loaded, ws, source)
    notes += completed
    notes += measured_notes(loaded.spec, ws, report, accel, r.gpu_memory, source)
    optimizer = doctor.decide_optimizer(cfg, accel, user_config=source is not None,
                                        here=kernels is not None)
    notes.append(f"optimizer: {optimizer.check.detail}")
    if topo.hosts:
        addr = doctor.master_address([h.name for h in topo.hosts], r.master_addr)
        notes.append(f"master address: --master_addr={addr} (the hostfile's first host; "
                     "--master-addr to change it)")
    total = r.steps if r.steps is not None else loaded.spec.train.total_steps
    if total < 1:
        raise DsWizardError(f"--steps must be at least 1, got {total}")
    run = spec_from_config(
        cfg, preset=loaded.name, world_size=ws, accelerator=accel.kind, backend=r.backend,
        steps=total, seed=loaded.spec.train.seed, data=_abs(r.data), data_dtype=r.data_dtype,
        tokenizer=_abs(r.tokenizer), config_source=source, nodes=topo.nodes,
        backend_resolved=decision.name,
        kernels=dict(kernels.versions) if kernels is not None else doctor.package_versions(),
        optimizer=optimizer.name, measure=r.measure)
    if r.check_data:
        notes.append(data_note(run, loaded.spec))
    env = run_env(accel, max(topo.ranks_per_node), r.gpus)
    if r.dry_run:
        return PreparedRun(run, loaded.spec, cfg, accel, env=env, notes=tuple(notes),
                           topology=topo, visible=r.gpus, kernels=kernels,
                           optimizer=optimizer)
    if accel.kind == "cpu":
        from ds_wizard.launch.host_fit import check_cpu_ranks

        check_cpu_ranks(cfg, loaded.spec, ws, loaded.name)
    _deep_check(cfg, ws, source or f"the config built from preset {loaded.name}")
    _check_scriptable(r, run, topo.hostfile)  # refused before the run directory exists
    from ds_wizard.launch.observe import require_tracker_packages, stall_options

    require_tracker_packages(cfg)
    stall_options(r.stall_after, r.on_stall, accel.kind, ws)  # refused before the run dir
    run_dir = rundir.create_run_dir(r.runs_dir, loaded.name)
    from ds_wizard.core.config.monitor import place_trackers

    cfg, placed = place_trackers(cfg, run_dir.resolve())
    notes += placed
    if topo.multi_node or r.slurm:
        hostfile = run_dir.resolve() / HOSTFILE_NAME
        run = replace(run, hostfile=str(hostfile))
        if topo.hosts:
            write_hostfile(hostfile, topo)
    _write_run_files(run_dir, run, loaded.spec, cfg)
    plan = PreparedRun(run, loaded.spec, cfg, accel, run_dir=run_dir, env=env,
                       notes=tuple(notes), topology=topo, visible=r.gpus, kernels=kernels,
                       optimizer=optimizer)
    if r.doctor:
        # run.json already records the backend that would have run; nothing has started
        plan = doctor.gate(plan, r.runs_dir)
    return _finish(plan, r)


def _finish(plan: PreparedRun, r: LaunchRequest) -> PreparedRun:
    """Add the command (it names the run directory) and write command.txt and the script."""
    assert plan.run_dir is not None
    hosts = [h.name for h in plan.topology.hosts] if plan.topology else []
    command = tuple(build_command(plan.run, plan.run_dir, resume=plan.resume,
                                  visible=plan.visible,
                                  master_port=r.master_port, extra=r.extra,
                                  master_addr=r.master_addr or (hosts[0] if hosts else None)))
    from ds_wizard.launch.observe import observe_env, stall_options

    env, seen = observe_env(plan.config, plan.run_dir.resolve(), plan.accelerator.kind)
    plan = replace(plan, command=command, env={**plan.env, **env},
                   notes=(*plan.notes, *seen),
                   stall=stall_options(r.stall_after, r.on_stall, plan.accelerator.kind,
                                       _local_ranks(plan)))
    paths = plan.paths
    # every text first (a value that cannot be quoted is refused here), then the writes
    command_line = plan.command_text + "\n"
    script = script_text(plan.command, plan.env)
    sbatch = None
    if r.slurm:
        topo = plan.topology or resolve_topology(
            num_nodes=plan.run.nodes, gpus_per_node=plan.run.world_size // plan.run.nodes)
        plan = replace(plan, sbatch=plan.run_dir / SBATCH_NAME)
        sbatch = sbatch_for(plan.run_dir, plan.command, plan.env, topo,
                            gpus=plan.accelerator.kind == "cuda")
    if not plan.resume:  # a resume's is written once it starts (launch.client)
        atomic_write_text(paths.command, command_line)
    if not paths.script.exists():
        atomic_write_text(paths.script, script)
        paths.script.chmod(0o755)
    if sbatch is not None and plan.sbatch is not None:
        atomic_write_text(plan.sbatch, sbatch)
        plan.sbatch.chmod(0o755)
    return plan


def _check_scriptable(r: LaunchRequest, run: RunSpec | None, hostfile: str | None) -> None:
    """Every path and argument the run's scripts will hold, checked before anything is
    written: a control character or line break in one is refused (launch.command)."""
    import sys

    if r.slurm:  # the run directory goes into #SBATCH --output=…
        sbatch_value(os.path.abspath(r.runs_dir), "--runs-dir")
    check_scriptable({"--runs-dir": os.path.abspath(r.runs_dir),
                      "the working directory": os.getcwd(),
                      "the Python executable": sys.executable,
                      "--data": run and run.data, "--tokenizer": run and run.tokenizer,
                      "--hostfile": hostfile,
                      **{f"argument {i + 1} after --": a for i, a in enumerate(r.extra)}})


def _local_ranks(plan: PreparedRun) -> int:
    """The heartbeats the supervisor can count on: the other nodes' reach it only when the
    run directory is on a shared file system (core.runs.stall)."""
    topo = plan.topology
    if plan.multi_node and topo is not None and topo.ranks_per_node:
        return int(topo.ranks_per_node[0])
    return plan.world_size


def _abs(p: str | Path | None) -> str | None:
    # os.path.realpath, not Path.resolve: a symlink loop is left for the data check to
    # report as one line (Path.resolve raises RuntimeError on one before Python 3.13)
    return None if p is None else os.path.realpath(os.path.expanduser(p))


def data_note(run: RunSpec, spec: PresetSpec) -> str:
    """Tokenizer, data and vocabulary checks, the same ones each rank repeats."""
    from ds_wizard.core.plan.params import padded_vocab
    from ds_wizard.core.runs.data import ShardedSamples, load_tokenizer, load_tokens

    model = spec.model
    vocab = padded_vocab(model.vocab_size, model.pad_vocab_size_multiple)
    tok = load_tokenizer(run.tokenizer)
    source = load_tokens(run.data, tok, vocab, dtype=run.data_dtype)
    shard = ShardedSamples(source.tokens, spec.train.seq_len, 0, run.world_size)
    return (f"data: {source.description}, {len(source.tokens):,} tokens "
            f"({tok.name} tokenizer), {shard.per_rank:,} samples per rank per epoch")


def _write_run_files(run_dir: Path, run: RunSpec, spec: PresetSpec,
                     cfg: dict[str, Any]) -> None:
    from ds_wizard.core.config.dsconfig import dumps
    from ds_wizard.core.presets.store import to_toml

    paths = rundir.RunPaths(run_dir)
    atomic_write_text(paths.config, dumps(cfg))
    atomic_write_text(paths.preset, to_toml(spec, [f"snapshot of preset {run.preset} "
                                                   "as launched (--set applied)"]))
    write_run_info(paths.run_json, RunInfo(
        run, created=datetime.now().isoformat(timespec="seconds"),
        ds_wizard_version=__version__, cwd=str(Path.cwd())))


def _resume(r: LaunchRequest, accel: Accelerator) -> PreparedRun:
    given = {"--preset": r.preset, "--set": r.sets, "--config": r.config_path,
             "--data": r.data, "--data-dtype": r.data_dtype, "--tokenizer": r.tokenizer}
    if clash := [flag for flag, value in given.items() if value]:
        # the run's own preset snapshot, config and data are what its checkpoint fits
        raise DsWizardError(
            f"--resume continues a run as it was launched; {', '.join(clash)} cannot "
            "change it", "drop them, or start a new run with them")
    from ds_wizard.core.check.checker import load_config_file
    from ds_wizard.core.presets.lookup import read_preset_file

    run_dir = rundir.resolve_run_ref(str(r.resume), r.runs_dir, resumable=True)
    paths = rundir.RunPaths(run_dir)
    info = read_run_info(paths.run_json)
    # sizes only here (a stat per file); the ranks verify every SHA-256 before loading
    choice = rundir.latest_intact(paths.checkpoints, full=False)
    ckpt = choice.chosen
    if ckpt is None:
        why = f": {'; '.join(choice.notes)}" if choice.notes else ""
        raise rundir.RunError(f"{run_dir} has no complete checkpoint to resume from{why}",
                            "start a new run instead")
    ws = info.spec.world_size
    if info.spec.accelerator == "cuda" and accel.kind != "cuda":
        raise rundir.RunError(f"{run_dir} ran on CUDA GPUs but none are visible here")
    total = r.steps if r.steps is not None else info.spec.steps
    if total <= ckpt.step:
        raise rundir.RunError(f"{run_dir} is already at step {ckpt.step}",
                            f"pass --steps N with N > {ckpt.step} to train further")
    preset = read_preset_file(paths.preset, info.spec.preset)
    cfg = load_config_file(paths.config)
    # run.json stays as launched; steps and backend of this launch go on the command line
    run = replace(info.spec, steps=total,
                  backend=r.backend if r.backend != "auto" else info.spec.backend)
    accel = replace(accel, kind=info.spec.accelerator)
    notes = [*choice.notes, f"resuming {run_dir} from {ckpt.tag}: next step {ckpt.step + 1}, "
             f"training to step {total}", data_note(run, preset.spec)]
    from ds_wizard.launch import reshape

    layout_flags = (r.hostfile, r.num_nodes, r.gpus_per_node) != (None, None, None)
    if reshape.wanted(r, info, ckpt) or (layout_flags and _other_layout(r, accel, run)):
        return _resume_reshaped(r, accel, run_dir, info, ckpt, cfg, preset, run, notes)
    if r.hostfile is not None or r.num_nodes is not None or r.gpus_per_node is not None:
        run = _resume_nodes(r, run, run_dir, notes)
    plan = PreparedRun(run, preset.spec, cfg, accel, resume=True, resume_step=ckpt.step,
                       run_dir=run_dir, env=run_env(accel, ws, r.gpus), notes=tuple(notes),
                       visible=r.gpus)
    return plan if r.dry_run else _finish(plan, r)


def _other_layout(r: LaunchRequest, accel: Accelerator, run: RunSpec) -> bool:
    """Whether --num-nodes/--gpus-per-node ask for another number of ranks or nodes."""
    topo, _ = world_size_for(r.num_gpus, accel, num_nodes=r.num_nodes,
                             gpus_per_node=r.gpus_per_node, hostfile=r.hostfile)
    return (topo.nodes, topo.total_ranks) != (run.nodes, run.world_size)


def _resume_reshaped(r: LaunchRequest, accel: Accelerator, run_dir: Path, info: RunInfo,
                     ckpt: rundir.CheckpointInfo, cfg: dict[str, Any], preset: Preset,
                     run: RunSpec, notes: list[str]) -> PreparedRun:
    """A resume on another world size (launch.reshape): refused, planned, or carried out."""
    from ds_wizard.launch import reshape

    plan_, topo = reshape.plan_reshape(r, accel, run_dir, info, ckpt, cfg, preset, run)
    ws = plan_.run.world_size
    if accel.kind == "cpu":
        from ds_wizard.launch.host_fit import check_cpu_ranks

        check_cpu_ranks(plan_.config, preset.spec, ws, run.preset)
    if not r.dry_run:
        _deep_check(plan_.config, ws, f"{run_dir.name} re-split for {ws} rank(s)")
        plan_ = reshape.commit_reshape(plan_, run_dir, r.progress or (lambda _line: None))
    elif plan_.conversion.universal:
        notes.append(f"would convert {ckpt.tag} with ds_to_universal before starting")
    notes = [n for n in notes if not n.startswith(f"resuming {run_dir}")]
    notes.insert(0, f"resuming {run_dir} from {plan_.checkpoint.tag}: next step "
                    f"{plan_.checkpoint.step + 1}, training to step {run.steps}")
    plan = PreparedRun(plan_.run, preset.spec, plan_.config, accel, resume=True,
                       resume_step=plan_.checkpoint.step, run_dir=run_dir,
                       env=run_env(accel, max(topo.ranks_per_node), r.gpus),
                       notes=(*notes, *plan_.notes), topology=topo, visible=r.gpus)
    return plan if r.dry_run else _finish(plan, r)


def _resume_nodes(r: LaunchRequest, run: RunSpec, run_dir: Path, notes: list[str]) -> RunSpec:
    """Resume on other hosts (a new Slurm allocation, a replaced node): the same number of
    nodes and ranks, since each rank's ZeRO checkpoint shard is its own."""
    topo = resolve_topology(num_nodes=r.num_nodes, gpus_per_node=r.gpus_per_node,
                            hostfile=r.hostfile,
                            num_gpus=None if r.hostfile else run.world_size)
    if (topo.nodes, topo.total_ranks) != (run.nodes, run.world_size):
        raise rundir.RunError(
            f"{run_dir.name} was trained as {run.nodes} node(s), {run.world_size} rank(s); "
            f"{topo.layout()} cannot load its per-rank checkpoint shards",
            f"resume with {run.nodes} node(s) and {run.world_size} ranks in all")
    if not topo.hosts:
        return run
    hostfile = run_dir.resolve() / HOSTFILE_NAME
    if not r.dry_run:
        write_hostfile(hostfile, topo)
    notes.append(f"on {', '.join(h.name for h in topo.hosts)} ({topo.source})")
    return replace(run, hostfile=str(hostfile))


def summary_lines(plan: PreparedRun, *, dry_run: bool = False) -> list[str]:
    """The source document's ✅ summary for this plan, plus what would be launched."""
    from ds_wizard.core.config.summary import model_type
    from ds_wizard.core.config.summary import summary_lines as report_lines
    from ds_wizard.core.plan.params import count_params

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


def scripts_text(plan: PreparedRun) -> list[str]:
    """What was written for a job that starts elsewhere (Slurm, or on the head node)."""
    paths = plan.paths
    lines = [*summary_lines(plan), *(f"ℹ️  {n}" for n in plan.notes),
             f"📁 run directory: {paths.root}"]
    if plan.sbatch is not None:
        lines.append(f"📝 wrote {plan.sbatch}: submit it with `sbatch {plan.sbatch}` "
                     "(nothing was started here)")
    else:
        head = plan.topology.hosts[0].name if plan.topology and plan.topology.hosts else None
        lines.append(f"📝 wrote {paths.script}: run it on the head node"
                     + (f" ({head})" if head else "") + " (nothing was started here)")
    return lines


def dry_run_text(plan: PreparedRun) -> str:
    lines = summary_lines(plan, dry_run=True)
    lines.append("")
    lines += [f"ℹ️  {n}" for n in plan.notes]
    lines.append(f"ℹ️  would train {plan.steps} step(s) with backend {plan.backend} "
                 f"on {plan.world_size} {plan.accelerator.kind} rank(s); nothing was started")
    return "\n".join(lines)
