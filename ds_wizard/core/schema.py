"""The preset file format: one strict pydantic schema, versioned.

A preset is TOML data only (``presets/*.toml``). Unknown keys, wrong types and values
that make no sense are rejected with the field path, so a teammate's file fails loudly
instead of training something else.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Version history (ds_wizard/core/migrations.py turns older files into the current form):
#   1 — the first format.
#   2 — adds the optional top-level ``based_on``: the preset a file was derived from
#       (written by ``presets new --from``), so a reviewer can diff it against its base.
SCHEMA_VERSION = 2

Precision = Literal["auto", "bf16", "fp16", "fp32", "autocast"]
OffloadDevice = Literal["none", "cpu", "nvme"]


class _Strict(BaseModel):
    # strict: "8" is not 8 and 1.5 is not an int; a preset says exactly what it means.
    # nan/inf are legal TOML floats but never a sensible learning rate or clip value.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class ModelSpec(_Strict):
    """Architecture, named as in mamba-ssm's ``MambaConfig``."""

    arch: Literal["mamba1", "mamba2"] = "mamba1"
    d_model: int = Field(gt=0, le=65536)
    n_layer: int = Field(gt=0, le=1024)
    vocab_size: int = Field(default=50277, gt=0, le=4_000_000)
    pad_vocab_size_multiple: int = Field(default=8, ge=1, le=4096)
    d_state: int = Field(default=0, ge=0, le=1024, description="0 means the arch default")
    d_conv: int = Field(default=4, gt=0, le=64)
    expand: int = Field(default=2, gt=0, le=16)
    headdim: int = Field(default=64, gt=0, le=1024, description="Mamba-2 only")
    ngroups: int = Field(default=1, gt=0, le=1024, description="Mamba-2 only")
    chunk_size: int = Field(default=256, gt=0, le=65536, description="Mamba-2 only")
    tie_embeddings: bool = True
    bias: bool = False
    conv_bias: bool = True

    @model_validator(mode="after")
    def _arch_defaults(self) -> ModelSpec:
        if self.d_state == 0:
            # frozen model: set through object.__setattr__ once, during validation
            object.__setattr__(self, "d_state", 16 if self.arch == "mamba1" else 128)
        if self.arch == "mamba2" and (self.expand * self.d_model) % self.headdim:
            raise ValueError(
                f"expand × d_model = {self.expand * self.d_model} must be a multiple of "
                f"headdim = {self.headdim} for mamba2"
            )
        return self


class TrainSpec(_Strict):
    """Training recipe. Defaults follow the Mamba paper (App. E.2)."""

    seq_len: int = Field(default=2048, gt=0, le=1_048_576)
    lr: float = Field(default=6e-4, gt=0, le=1)
    min_lr: float = Field(default=1e-5, ge=0, le=1)
    warmup_steps: int = Field(default=2000, gt=0, le=10_000_000)
    total_steps: int = Field(default=100_000, gt=0, le=100_000_000)
    weight_decay: float = Field(default=0.1, ge=0, le=10)
    betas: list[float] = Field(default=[0.9, 0.95], min_length=2, max_length=2)
    eps: float = Field(default=1e-8, gt=0, le=1)
    grad_clip: float = Field(default=1.0, ge=0, le=1e6)
    precision: Precision = "auto"
    activation_checkpointing: bool = False
    log_every: int = Field(default=10, gt=0, le=1_000_000)
    save_every: int = Field(default=1000, gt=0, le=100_000_000)
    seed: int = Field(default=1234, ge=0, le=2**32 - 1)

    @model_validator(mode="after")
    def _consistent(self) -> TrainSpec:
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr {self.min_lr} is above lr {self.lr}")
        if self.warmup_steps > self.total_steps:
            raise ValueError(
                f"warmup_steps {self.warmup_steps} exceeds total_steps {self.total_steps}"
            )
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must lie in [0, 1), got {self.betas}")
        return self


class BatchPlan(_Strict):
    global_batch: int = Field(gt=0, le=1 << 24, description="samples per optimizer step")
    micro_batch: int = Field(gt=0, le=1 << 16, description="samples per GPU per forward")


class BatchSpec(BatchPlan):
    """The target batch, with optional reviewed choices for particular world sizes.

    ``by_world_size`` keys are data-parallel sizes, written as TOML keys
    (``[batch.by_world_size.2]``).
    A team uses them to pin what it has measured to work on a given GPU count.
    """

    by_world_size: dict[str, BatchPlan] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _keys_are_sizes(self) -> BatchSpec:
        for key, plan in self.by_world_size.items():
            if not key.isdigit() or int(key) < 1 or len(key) > 6:
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
        return self

    def for_world_size(self, world_size: int) -> BatchPlan:
        return self.by_world_size.get(str(world_size), BatchPlan(
            global_batch=self.global_batch, micro_batch=self.micro_batch
        ))


class DeepSpeedSpec(_Strict):
    zero_stage: int = Field(default=2, ge=0, le=3)
    offload_optimizer: OffloadDevice = "none"
    offload_param: OffloadDevice = "none"
    overlap_comm: bool = True
    contiguous_gradients: bool = True
    steps_per_print: int = Field(default=100, gt=0, le=100_000_000)

    @model_validator(mode="after")
    def _offload_needs_stage(self) -> DeepSpeedSpec:
        if self.offload_param != "none" and self.zero_stage != 3:
            raise ValueError("offload_param needs zero_stage = 3")
        if self.offload_optimizer != "none" and self.zero_stage == 0:
            raise ValueError("offload_optimizer needs zero_stage 1, 2 or 3")
        return self


class PresetSpec(_Strict):
    """The whole content of a preset file."""

    schema_version: int = Field(default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)
    description: str = Field(default="", max_length=500)
    based_on: str = Field(
        default="", max_length=200, description="the preset this one was derived from (v2)"
    )
    model: ModelSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    batch: BatchSpec
    deepspeed: DeepSpeedSpec = Field(default_factory=DeepSpeedSpec)
