"""The preset file format: one strict schema, versioned.

A preset is TOML data only (``presets/*.toml``). The schema is written once, here, as
frozen standard-library dataclasses whose annotations carry the constraints
(:class:`Bounds`). pydantic enforces them strictly at the file boundary
(:mod:`ds_wizard.core.presets.validation`): unknown keys, wrong types and values that make no
sense are rejected with the field path, so a teammate's file fails loudly instead of
training something else. The rest of the core only reads these objects, so it never
imports pydantic, and a preset already validated once is rebuilt from the validation
cache without it (the start-up path of ``ds-wizard --auto``).

No ``from __future__ import annotations`` here on purpose: the annotations are real
objects, so the override and "did you mean" code can walk the schema without evaluating
strings.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, get_args, get_origin

from ds_wizard.core.base.limits import (
    MAX_GLOBAL_BATCH,
    MAX_MICRO_BATCH,
    MAX_WORLD_SIZE,
    LimitError,
    parse_int,
)

# Version history (ds_wizard/core/presets/migrations.py turns older files into the current form):
#   1 — the first format.
#   2 — adds the optional top-level ``based_on``: the preset a file was derived from
#       (written by ``presets new --from``), so a reviewer can diff it against its base.
SCHEMA_VERSION = 2

Precision = Literal["auto", "bf16", "fp16", "fp32", "autocast"]
OffloadDevice = Literal["none", "cpu", "nvme"]
# DeepSpeed's monitor backends ds-wizard configures (``csv`` is DeepSpeed's ``csv_monitor``)
Tracker = Literal["tensorboard", "csv", "wandb"]

# strict: "8" is not 8 and 1.5 is not an int; a preset says exactly what it means.
# nan/inf are legal TOML floats but never a sensible learning rate or clip value.
# pydantic reads this from each class; it is a plain dict so this module needs no pydantic.
STRICT: dict[str, Any] = {"extra": "forbid", "strict": True, "allow_inf_nan": False}


@dataclass(frozen=True)
class Bounds:
    """Limits on a field (``Annotated[int, Bounds(gt=0, le=64)]``), enforced by pydantic.

    The same limits ``annotated_types.Gt``/``Le``/``Len`` would express, through pydantic's
    public ``__get_pydantic_core_schema__`` hook; importing ``annotated_types`` (and the
    ``typing_extensions`` it pulls in) would cost more start-up time than everything else
    in this module.
    """

    gt: float | None = None
    ge: float | None = None
    le: float | None = None
    min_length: int | None = None
    max_length: int | None = None

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        schema = handler(source)
        # pydantic-core's int, float, str and list schemas take these keys directly and
        # report violations as greater_than, less_than_equal, too_long, ...
        if schema.get("type") not in ("int", "float", "str", "list"):
            raise TypeError(f"Bounds does not apply to {source!r}")
        for key in ("gt", "ge", "le", "min_length", "max_length"):
            value = getattr(self, key)
            if value is not None:
                schema[key] = value
        return schema


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """Architecture, named as in mamba-ssm's ``MambaConfig``."""

    __pydantic_config__ = STRICT

    arch: Literal["mamba1", "mamba2"] = "mamba1"
    d_model: Annotated[int, Bounds(gt=0, le=65536)]
    n_layer: Annotated[int, Bounds(gt=0, le=1024)]
    vocab_size: Annotated[int, Bounds(gt=0, le=4_000_000)] = 50277
    pad_vocab_size_multiple: Annotated[int, Bounds(ge=1, le=4096)] = 8
    d_state: Annotated[int, Bounds(ge=0, le=1024)] = 0  # 0 means the arch default
    d_conv: Annotated[int, Bounds(gt=0, le=64)] = 4
    expand: Annotated[int, Bounds(gt=0, le=16)] = 2
    headdim: Annotated[int, Bounds(gt=0, le=1024)] = 64  # Mamba-2 only
    ngroups: Annotated[int, Bounds(gt=0, le=1024)] = 1  # Mamba-2 only
    chunk_size: Annotated[int, Bounds(gt=0, le=65536)] = 256  # Mamba-2 only
    tie_embeddings: bool = True
    bias: bool = False
    conv_bias: bool = True

    def __post_init__(self) -> None:
        # Runs after pydantic's field checks and on every rebuild from the cache, so the
        # cross-field rules hold for every ModelSpec there is.
        if self.d_state == 0:
            # frozen: the arch default is filled in once, here
            object.__setattr__(self, "d_state", 16 if self.arch == "mamba1" else 128)
        if self.arch == "mamba2" and (self.expand * self.d_model) % self.headdim:
            raise ValueError(
                f"expand × d_model = {self.expand * self.d_model} must be a multiple of "
                f"headdim = {self.headdim} for mamba2"
            )


def _default_betas() -> list[float]:
    return [0.9, 0.95]


@dataclass(frozen=True, kw_only=True)
class TrainSpec:
    """Training recipe. Defaults follow the Mamba paper (App. E.2)."""

    __pydantic_config__ = STRICT

    seq_len: Annotated[int, Bounds(gt=0, le=1_048_576)] = 2048
    lr: Annotated[float, Bounds(gt=0, le=1)] = 6e-4
    min_lr: Annotated[float, Bounds(ge=0, le=1)] = 1e-5
    warmup_steps: Annotated[int, Bounds(gt=0, le=10_000_000)] = 2000
    total_steps: Annotated[int, Bounds(gt=0, le=100_000_000)] = 100_000
    weight_decay: Annotated[float, Bounds(ge=0, le=10)] = 0.1
    betas: Annotated[list[float], Bounds(min_length=2, max_length=2)] = field(
        default_factory=_default_betas
    )
    eps: Annotated[float, Bounds(gt=0, le=1)] = 1e-8
    grad_clip: Annotated[float, Bounds(ge=0, le=1e6)] = 1.0
    precision: Precision = "auto"
    activation_checkpointing: bool = False
    log_every: Annotated[int, Bounds(gt=0, le=1_000_000)] = 10
    save_every: Annotated[int, Bounds(gt=0, le=100_000_000)] = 1000
    seed: Annotated[int, Bounds(ge=0, le=2**32 - 1)] = 1234

    def __post_init__(self) -> None:
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr {self.min_lr} is above lr {self.lr}")
        if self.warmup_steps > self.total_steps:
            raise ValueError(
                f"warmup_steps {self.warmup_steps} exceeds total_steps {self.total_steps}"
            )
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must lie in [0, 1), got {self.betas}")


@dataclass(frozen=True, kw_only=True)
class WorldSizeBatch:
    __pydantic_config__ = STRICT

    global_batch: Annotated[int, Bounds(gt=0, le=MAX_GLOBAL_BATCH)]  # samples per step
    micro_batch: Annotated[int, Bounds(gt=0, le=MAX_MICRO_BATCH)]  # per GPU per forward


@dataclass(frozen=True, kw_only=True)
class BatchSpec:
    """The target batch, with optional reviewed choices for particular world sizes.

    ``by_world_size`` keys are data-parallel sizes, written as TOML keys
    (``[batch.by_world_size.2]``).
    A team uses them to pin what it has measured to work on a given GPU count.
    """

    __pydantic_config__ = STRICT

    global_batch: Annotated[int, Bounds(gt=0, le=MAX_GLOBAL_BATCH)]
    micro_batch: Annotated[int, Bounds(gt=0, le=MAX_MICRO_BATCH)]
    by_world_size: dict[str, WorldSizeBatch] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, plan in self.by_world_size.items():
            try:  # plain ASCII digits within the world-size limit: not "²", "08" or 10^5000
                size = parse_int(key, "by_world_size key", high=MAX_WORLD_SIZE)
            except LimitError as exc:
                raise ValueError(exc.one_line()) from exc
            if str(size) != key:
                raise ValueError(
                    f"by_world_size key {key!r} must be a data-parallel size such as 1, 2, 8"
                )
            # a pinned plan is a reviewed, exact choice: DeepSpeed could not reproduce one
            # whose global batch is not micro × gas × size for a whole gas
            if plan.global_batch % (plan.micro_batch * int(key)):
                raise ValueError(
                    f"by_world_size.{key}: global_batch {plan.global_batch} is not a multiple "
                    f"of micro_batch {plan.micro_batch} × {key} ranks"
                )

    def for_world_size(self, world_size: int) -> WorldSizeBatch:
        return self.by_world_size.get(str(world_size), WorldSizeBatch(
            global_batch=self.global_batch, micro_batch=self.micro_batch
        ))


@dataclass(frozen=True, kw_only=True)
class DeepSpeedSpec:
    __pydantic_config__ = STRICT

    zero_stage: Annotated[int, Bounds(ge=0, le=3)] = 2
    offload_optimizer: OffloadDevice = "none"
    offload_param: OffloadDevice = "none"
    overlap_comm: bool = True
    contiguous_gradients: bool = True
    steps_per_print: Annotated[int, Bounds(gt=0, le=100_000_000)] = 100

    def __post_init__(self) -> None:
        problem = offload_problem(self.zero_stage, self.offload_optimizer != "none",
                                  self.offload_param != "none")
        if problem:
            raise ValueError(problem)


def offload_problem(zero_stage: int, offload_optimizer: bool, offload_param: bool) -> str | None:
    """The one offload rule, for a file and for a stage chosen later (``--zero-stage``):
    DeepSpeed offloads only what the stage shards."""
    if offload_param and zero_stage != 3:
        return "parameter offload (offload_param) needs ZeRO stage 3"
    if offload_optimizer and zero_stage == 0:
        return "optimizer offload (offload_optimizer) needs ZeRO stage 1, 2 or 3"
    return None


def _no_trackers() -> list[Tracker]:
    return []


@dataclass(frozen=True, kw_only=True)
class MonitorSpec:
    """Trackers fed through DeepSpeed's own ``monitor`` section (issue 22).

    ds-wizard writes the config keys; DeepSpeed's ``MonitorMaster`` does the logging. A
    launch puts the output under the run directory, named after the run.
    """

    __pydantic_config__ = STRICT

    trackers: Annotated[list[Tracker], Bounds(max_length=3)] = field(
        default_factory=_no_trackers)
    # W&B's project; the run's name is the W&B group, so its ranks' runs stay together
    wandb_project: Annotated[str, Bounds(min_length=1, max_length=128)] = "ds-wizard"

    def __post_init__(self) -> None:
        if len(set(self.trackers)) != len(self.trackers):
            raise ValueError(f"trackers lists one twice: {self.trackers}")


@dataclass(frozen=True, kw_only=True)
class PresetSpec:
    """The whole content of a preset file."""

    __pydantic_config__ = STRICT

    schema_version: Annotated[int, Bounds(ge=1, le=SCHEMA_VERSION)] = SCHEMA_VERSION
    description: Annotated[str, Bounds(max_length=500)] = ""
    # the preset this one was derived from (v2)
    based_on: Annotated[str, Bounds(max_length=200)] = ""
    model: ModelSpec
    train: TrainSpec = field(default_factory=TrainSpec)
    batch: BatchSpec
    deepspeed: DeepSpeedSpec = field(default_factory=DeepSpeedSpec)
    monitor: MonitorSpec = field(default_factory=MonitorSpec)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (nested dicts and lists), in the schema's field order."""
        return dataclasses.asdict(self)

    @classmethod
    def from_validated(cls, data: dict[str, Any]) -> "PresetSpec":
        """Rebuild a spec from :meth:`to_dict` output of a spec that passed validation.

        Only for data that came out of a validated spec (the validation cache): the
        field limits are not re-checked here, the cross-field rules are. Data of any
        other shape (a missing or extra key) raises ValueError, KeyError or TypeError.
        """
        return _rebuild(cls, data)


def is_section(ann: Any) -> bool:
    """Whether an annotation is a table of the schema (a nested spec class)."""
    return isinstance(ann, type) and dataclasses.is_dataclass(ann)


def field_types(cls: type) -> dict[str, Any]:
    """Field name → annotation of a schema class (``Annotated`` stripped)."""
    out = {}
    for f in dataclasses.fields(cls):
        ann = f.type
        if get_origin(ann) is Annotated:
            ann = get_args(ann)[0]
        out[f.name] = ann
    return out


def _rebuild(cls: type, data: dict[str, Any]) -> Any:
    # Walks the annotations, so a field added to the schema is rebuilt with no edit here.
    types = field_types(cls)
    if set(data) != set(types):
        raise ValueError(f"{cls.__name__}: keys {sorted(data)} are not {sorted(types)}")
    kwargs = {}
    for name, ann in types.items():
        value = data[name]
        if is_section(ann):
            value = _rebuild(ann, value)
        elif get_origin(ann) is dict and is_section(get_args(ann)[1]):
            value = {k: _rebuild(get_args(ann)[1], v) for k, v in value.items()}
        kwargs[name] = value
    return cls(**kwargs)
