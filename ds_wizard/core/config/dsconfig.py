"""Preset + world size → a complete DeepSpeed JSON config.

One function, used by the CLI (``--auto``, ``generate``), the TUI and the launcher, so
every surface writes the same file for the same choices.
"""

from __future__ import annotations

import json
from typing import Any

from ds_wizard.core.batch.choice import BatchChoice
from ds_wizard.core.presets.rules import check_offload, preset_precision
from ds_wizard.core.presets.schema import PresetSpec


def build_config(
    spec: PresetSpec,
    choice: BatchChoice,
    *,
    precision: str = "auto",
    bf16_supported: bool | None = None,
    zero_stage: int | None = None,
    offload_optimizer: str | None = None,
    offload_param: str | None = None,
) -> dict[str, Any]:
    """The DeepSpeed config dict, keys in the order a person reads them."""
    train = spec.train
    ds = spec.deepspeed
    stage = ds.zero_stage if zero_stage is None else zero_stage
    off_opt = ds.offload_optimizer if offload_optimizer is None else offload_optimizer
    off_par = ds.offload_param if offload_param is None else offload_param
    check_offload(stage, off_opt != "none", off_par != "none")
    prec = preset_precision(spec, precision, bf16_supported)

    cfg: dict[str, Any] = {
        "train_batch_size": choice.global_batch,
        "train_micro_batch_size_per_gpu": choice.micro_batch,
        "gradient_accumulation_steps": choice.grad_accum,
        "gradient_clipping": train.grad_clip,
        "steps_per_print": ds.steps_per_print,
    }
    if prec == "bf16":
        cfg["bf16"] = {"enabled": True}
    elif prec == "fp16":
        cfg["fp16"] = {
            "enabled": True,
            "loss_scale": 0,
            "initial_scale_power": 16,
            "loss_scale_window": 1000,
            "hysteresis": 2,
            "min_loss_scale": 1,
        }
    elif prec == "autocast":
        # fp32 master params with bf16 compute: what the Mamba README recommends, since
        # SSM parameters are sensitive to 16-bit storage
        cfg["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}

    zero: dict[str, Any] = {"stage": stage}
    if stage > 0:
        zero.update({"overlap_comm": ds.overlap_comm,
                     "contiguous_gradients": ds.contiguous_gradients})
    if stage in (1, 2):
        # only the ZeRO-1/2 optimizer reads these two, so a ZeRO-3 config leaves them out
        zero.update({"allgather_partitions": True, "reduce_scatter": True})
    if off_opt != "none":
        zero["offload_optimizer"] = {"device": off_opt, "pin_memory": True}
    if off_par != "none":
        zero["offload_param"] = {"device": off_par, "pin_memory": True}
    cfg["zero_optimization"] = zero

    cfg["optimizer"] = optimizer_block(spec)
    cfg["scheduler"] = {
        "type": "WarmupCosineLR",
        "params": {
            "total_num_steps": train.total_steps,
            "warmup_num_steps": train.warmup_steps,
            "warmup_type": "linear",
            "warmup_min_ratio": 0.0,
            "cos_min_ratio": train.min_lr / train.lr,
        },
    }
    cfg["wall_clock_breakdown"] = False
    if spec.monitor.trackers:
        from ds_wizard.core.config.monitor import with_trackers

        # job name and paths are the run's once launched (core.config.monitor.place_trackers)
        cfg = with_trackers(cfg, spec.monitor.trackers, job_name="ds-wizard",
                            wandb_project=spec.monitor.wandb_project)
    return cfg


def optimizer_block(spec: PresetSpec) -> dict[str, Any]:
    """The preset's optimizer as DeepSpeed's ``optimizer`` section."""
    train = spec.train
    return {
        "type": "AdamW",
        "params": {
            "lr": train.lr,
            "betas": list(train.betas),
            "eps": train.eps,
            "weight_decay": train.weight_decay,
        },
    }


def dumps(cfg: dict[str, Any]) -> str:
    """The one JSON text format every writer uses, so files compare byte for byte."""
    return json.dumps(cfg, indent=2) + "\n"
