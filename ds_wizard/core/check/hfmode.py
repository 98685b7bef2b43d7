"""HF Trainer mode: fill ``"auto"`` exactly as transformers' DeepSpeed integration does.

Mirrors ``HfTrainerDeepSpeedConfig.trainer_config_process`` (transformers 5,
``integrations/deepspeed.py``): each ``fill_match`` replaces an ``"auto"`` with the
TrainingArguments value, and collects a mismatch when a hard-coded value disagrees; the
Trainer then raises one ``ValueError`` listing them. ``tests/test_hfmode.py`` compares this
module with the real class. Values that need the model or the step count
(``trainer_config_finalize``: bucket sizes from hidden_size, total/warm-up steps) are left
as they are and reported.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.base.fsio import read_json

#: bytes of an --hf-args file: a TrainingArguments dump is a few kilobytes
MAX_HF_ARGS_BYTES = 4 << 20

MISMATCH_HEAD = ("Please correct the following DeepSpeed config values that mismatch "
                 "TrainingArguments values:")
MISMATCH_TAIL = "The easiest method is to set these DeepSpeed config values to 'auto'."
# filled later by trainer_config_finalize, from the model and the run length
FINALIZE_KEYS = ("zero_optimization.reduce_bucket_size",
                 "zero_optimization.stage3_prefetch_bucket_size",
                 "zero_optimization.stage3_param_persistence_threshold",
                 "scheduler.params.total_num_steps", "scheduler.params.warmup_num_steps")


@dataclass(frozen=True)
class HfArgs:
    """The TrainingArguments fields the integration reads, with transformers' defaults."""

    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    world_size: int = 1
    max_grad_norm: float = 1.0
    learning_rate: float = 5e-5
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    weight_decay: float = 0.0
    fp16: bool = False
    bf16: bool = False
    fp16_full_eval: bool = False
    bf16_full_eval: bool = False
    save_on_each_node: bool = False
    auto_find_batch_size: bool = False


def parse_hf_args(spec: str | None, path: str | Path | None, world_size: int) -> HfArgs:
    """``--hf k=v,k=v`` and/or ``--hf-args FILE.json`` (the flag wins) → :class:`HfArgs`.

    ``world_size`` (from --num-gpus) is used unless the arguments give one."""
    values: dict[str, Any] = {}
    if path is not None:
        data = read_json(Path(path), limit=MAX_HF_ARGS_BYTES,
                         what="JSON object of TrainingArguments")
        if not isinstance(data, dict):
            raise DsWizardError(f"--hf-args {path}: not a JSON object",
                                'write {"per_device_train_batch_size": 4, ...}')
        values.update(data)
    for item in (spec or "").split(","):
        if not item.strip():
            continue
        key, eq, raw = item.partition("=")
        if not eq:
            raise DsWizardError(f"--hf: {item!r} is not key=value",
                                "e.g. --hf per_device_train_batch_size=4,"
                                "gradient_accumulation_steps=2")
        try:
            values[key.strip()] = json.loads(raw.strip().lower() if raw.strip().lower()
                                             in ("true", "false") else raw.strip())
        except ValueError:
            values[key.strip()] = raw.strip()
    known = {f.name: f for f in fields(HfArgs)}
    out: dict[str, Any] = {"world_size": world_size}
    for key, value in values.items():
        if key not in known:
            continue  # a whole TrainingArguments dump is fine; only these matter here
        kind = known[key].type
        ok = (isinstance(value, bool) if kind == "bool" else
              isinstance(value, int) and not isinstance(value, bool) if kind == "int" else
              isinstance(value, (int, float)) and not isinstance(value, bool))
        if not ok or (kind == "int" and value < 1):
            example = {"bool": "true", "int": "4"}.get(kind, "1.0")
            raise DsWizardError(f"HF argument {key}={json.dumps(value)} is not a valid {kind}",
                                f"write e.g. {key}={example}")
        out[key] = value
    return HfArgs(**out)


@dataclass
class HfFill:
    """The outcome of filling a config as the Trainer would."""

    config: dict[str, Any]
    filled: dict[str, Any] = field(default_factory=dict)  # path -> value put in for "auto"
    mismatches: list[str] = field(default_factory=list)  # transformers' own "- ds ... vs hf ..."
    left_auto: list[str] = field(default_factory=list)  # filled later from the model / run

    @property
    def error(self) -> str | None:
        """The ValueError the Trainer raises, or None."""
        if not self.mismatches:
            return None
        return f"{MISMATCH_HEAD}\n" + "\n".join(self.mismatches) + f"\n{MISMATCH_TAIL}"


def _node(config: dict[str, Any], long_key: str) -> tuple[Any, str]:
    nodes = long_key.split(".")
    key = nodes.pop()
    for name in nodes:
        config = config.get(name) if isinstance(config, dict) else None
        if config is None:
            return None, key
    # a block that is not an object (``"fp16": 3``): the Trainer's fill does not reach it,
    # and the verdict reports the block itself
    return (config if isinstance(config, dict) else None), key


def fill_like_trainer(cfg: dict[str, Any], args: HfArgs) -> HfFill:
    """``trainer_config_process`` on a copy of ``cfg``."""
    result = HfFill(copy.deepcopy(cfg))

    def fill(long_key: str, value: Any, hf_key: str, must_match: bool = True) -> None:
        node, key = _node(result.config, long_key)
        if node is None:
            return
        if node.get(key) == "auto":
            node[key] = value
            result.filled[long_key] = value
            return
        if not must_match:
            return
        current = node.get(key)
        if current is not None and current != value:
            result.mismatches.append(f"- ds {long_key}={current} vs hf {hf_key}={value}")

    must = not args.auto_find_batch_size
    train = args.world_size * args.per_device_train_batch_size * args.gradient_accumulation_steps
    fill("train_micro_batch_size_per_gpu", args.per_device_train_batch_size,
         "per_device_train_batch_size", must)
    fill("gradient_accumulation_steps", args.gradient_accumulation_steps,
         "gradient_accumulation_steps")
    fill("train_batch_size", train, "train_batch_size (calculated)", must)
    fill("gradient_clipping", args.max_grad_norm, "max_grad_norm")
    fill("optimizer.params.lr", args.learning_rate, "learning_rate")
    fill("optimizer.params.betas", [args.adam_beta1, args.adam_beta2], "adam_beta1+adam_beta2")
    fill("optimizer.params.eps", args.adam_epsilon, "adam_epsilon")
    fill("optimizer.params.weight_decay", args.weight_decay, "weight_decay")
    fill("scheduler.params.warmup_min_lr", 0, "", must_match=False)
    fill("scheduler.params.warmup_max_lr", args.learning_rate, "learning_rate")
    if args.save_on_each_node:
        result.config["checkpoint"] = result.config.get("checkpoint", {})
        result.config["checkpoint"]["use_node_local_storage"] = args.save_on_each_node
    fill("fp16.enabled", args.fp16 or args.fp16_full_eval, "fp16|fp16_full_eval")
    fill("bf16.enabled", args.bf16 or args.bf16_full_eval, "bf16|bf16_full_eval")
    for long_key in FINALIZE_KEYS:
        node, key = _node(result.config, long_key)
        if node is not None and node.get(key) == "auto":
            result.left_auto.append(long_key)
    return result
