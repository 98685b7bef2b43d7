"""The run contract: what the launch side decides and what each rank reads back.

The launch package resolves everything once (preset snapshot, world size, batch triple,
ZeRO stage, precision, backend, steps, data) into a :class:`RunSpec` and writes it into
``run.json`` with :func:`write_run_info`. A rank reads it with :func:`read_run_info` and
never decides any of it again; it imports only ``ds_wizard.core`` and ``ds_wizard.train``.

Rank 0 writes one :class:`MetricsRecord` per logged step with :func:`metrics_line`;
``core.metrics`` reads them back with :func:`parse_metrics`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ds_wizard.core.plan.backends import DEFAULT_BACKEND

# -- accelerators ------------------------------------------------------------------------

@dataclass(frozen=True)
class Accelerator:
    """Where the ranks run: ``cuda`` GPUs (``count`` of them) or ``cpu``."""

    kind: str  # "cuda" | "cpu"
    count: int  # devices seen (0 for cpu)
    reason: str
    bf16: bool | None = None


def accelerator_from(gpu_report: Any | None) -> Accelerator:
    """CUDA if the report (``core.gpus.GpuInventory``) sees a GPU, else CPU."""
    if gpu_report is not None and gpu_report.count:
        names = sorted({g.name for g in gpu_report.gpus})
        return Accelerator("cuda", gpu_report.count,
                           f"{gpu_report.count} GPU(s): {', '.join(names)}",
                           gpu_report.bf16_supported)
    reason = getattr(gpu_report, "reason", None) if gpu_report is not None else None
    return Accelerator("cpu", 0, reason or "no GPU found")


# -- the resolved launch decision -----------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """Everything a rank needs, decided by the launch side before any process starts.

    The preset itself travels as the snapshot ``preset.toml`` next to ``run.json``, the
    DeepSpeed config as ``ds_config.json``; these are their names and the decisions made
    with them.
    """

    preset: str  # the preset's name (the snapshot file holds its content)
    world_size: int
    accelerator: str  # "cuda" | "cpu"
    micro_batch: int
    grad_accum: int
    global_batch: int
    zero_stage: int
    precision: str  # "bf16" | "fp16" | "fp32"
    backend: str  # one of BACKENDS
    steps: int
    seed: int = 0
    data: str | None = None
    data_dtype: str | None = None
    tokenizer: str | None = None
    config_source: str | None = None  # the user's --config, None when built from the preset
    nodes: int = 1
    # the run's own hostfile (RUN_DIR/hostfile) for a multi-node job: a snapshot of the
    # hosts chosen, or written by the sbatch script when Slurm has allocated the nodes
    hostfile: str | None = None
    # a `ds-wizard tune` candidate: the ranks gather every rank's peak memory into the
    # metrics, and write no checkpoint and no final weights (the run is thrown away)
    measure: bool = False
    # decided once on the launch side (ds-wizard doctor's kernel import): the backend the
    # ranks must run (no fallback), the kernel packages' versions, the optimizer they use
    backend_resolved: str | None = None
    kernels: dict[str, str | None] | None = None
    optimizer: str | None = None


def spec_from_config(cfg: dict[str, Any], **decided: Any) -> RunSpec:
    """A RunSpec whose batch, ZeRO stage and precision are read off a checked config."""
    if cfg.get("bf16", {}).get("enabled"):
        precision = "bf16"
    elif cfg.get("fp16", {}).get("enabled"):
        precision = "fp16"
    else:
        precision = "fp32"
    return RunSpec(
        micro_batch=int(cfg["train_micro_batch_size_per_gpu"]),
        grad_accum=int(cfg["gradient_accumulation_steps"]),
        global_batch=int(cfg["train_batch_size"]),
        zero_stage=int(cfg.get("zero_optimization", {}).get("stage", 0)),
        precision=precision, **decided,
    )


@dataclass(frozen=True)
class RunInfo:
    """The keys of ``run.json``: the decision plus where and when it was made."""

    spec: RunSpec
    created: str
    ds_wizard_version: str
    cwd: str

    def to_dict(self) -> dict[str, Any]:
        # flat, as run.json always was: older readers find "preset", "world_size"… in place
        return {"created": self.created, "ds_wizard_version": self.ds_wizard_version,
                **asdict(self.spec), "cwd": self.cwd}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunInfo:
        """Raises KeyError/TypeError/ValueError on a run.json that lacks the contract."""
        known = {f.name for f in fields(RunSpec)}
        spec_data = {k: v for k, v in data.items() if k in known}
        spec_data.setdefault("backend", DEFAULT_BACKEND)
        spec = RunSpec(**spec_data)
        return cls(spec, str(data.get("created", "")),
                   str(data.get("ds_wizard_version", "")), str(data.get("cwd", "")))


def write_run_info(path: str | Path, info: RunInfo) -> None:
    """Write ``run.json`` (atomically) — once, when the run directory is made."""
    from ds_wizard.core.base.fsio import atomic_write_text

    atomic_write_text(Path(path), json.dumps(info.to_dict(), indent=2) + "\n")


def read_run_info(path: str | Path) -> RunInfo:
    """Read ``run.json``; a DsWizardError (one line) when it is missing or incomplete."""
    from ds_wizard.core.runs.rundir import RunError, load_run_json

    run_dir = Path(path).parent
    data = load_run_json(run_dir)
    if "micro_batch" not in data and (run_dir / "ds_config.json").is_file():
        # a run made before run.json held the batch decision: read it off its config
        from ds_wizard.core.check.checker import load_config_file

        decided = spec_from_config(load_config_file(run_dir / "ds_config.json"),
                                   preset="", world_size=0, accelerator="", backend="",
                                   steps=0)
        data = {"micro_batch": decided.micro_batch, "grad_accum": decided.grad_accum,
                "global_batch": decided.global_batch, "zero_stage": decided.zero_stage,
                "precision": decided.precision, **data}
        if "seed" not in data and (run_dir / "preset.toml").is_file():
            from ds_wizard.core.presets.lookup import read_preset_file

            data["seed"] = read_preset_file(run_dir / "preset.toml").spec.train.seed
    try:
        return RunInfo.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(f"{path} does not hold a complete run description ({exc})",
                       "start a new run with `ds-wizard launch`") from exc


# -- metrics records -------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricsRecord:
    """One line of ``metrics.jsonl``, written by rank 0 every ``log_every`` steps."""

    step: int
    loss: float
    lr: float
    grad_norm: float | None
    tokens_per_s: float
    samples_per_s: float
    elapsed_s: float
    tokens: int
    epoch: int
    max_mem_alloc_gib: float | None = None  # CUDA only
    mfu: float | None = None  # CUDA GPUs with a known peak only
    # a run resumed on another layout (core.runs.reshape): the segment from the second on,
    # and True on the first step of each such segment (the boundary)
    segment: int | None = None
    segment_start: bool | None = None
    max_mem_reserved_gib: float | None = None  # CUDA only (rank 0's allocator peak)
    peak_rss_gib: float | None = None  # rank 0's peak resident set
    # each rank's peak, in rank order (a `tune` run only): max reserved on GPUs, RSS on CPU
    rank_peak_gib: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        # absent, not null: a CPU run's records never had these keys
        for key in ("max_mem_alloc_gib", "mfu", "segment", "segment_start",
                    "max_mem_reserved_gib", "peak_rss_gib", "rank_peak_gib"):
            if out[key] is None:
                del out[key]
        return out


def metrics_line(record: MetricsRecord) -> str:
    """The JSON line for ``record`` (with its newline)."""
    return json.dumps(record.to_dict()) + "\n"


def parse_metrics(raw: str | bytes) -> dict[str, Any] | None:
    """One line of ``metrics.jsonl`` as a dict, or None when it is not a JSON object.

    Readers get a dict (not a MetricsRecord) so a file from an older or newer version,
    with keys added or missing, still plots.
    """
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


METRICS_KEYS: tuple[str, ...] = tuple(f.name for f in fields(MetricsRecord))
