"""The parts of ``DeepSpeedConfig.__init__`` that are plain code rather than pydantic models.

``ds_wizard.core.check.dsschema`` covers the pydantic blocks. This module mirrors the rest of
``deepspeed/runtime/config.py`` (0.19): the removed keys, the world size divided by
``sequence_parallel_size``, the scalar getters that raise, the batch resolution run on the
values exactly as written (Python's own operators, so ``"8"``, ``16.0`` and ``true`` behave
as they do in DeepSpeed) and ``_do_error_check``. Each finding carries DeepSpeed's
evaluation order so the first error is the one DeepSpeed raises.
"""

from __future__ import annotations

import json
from typing import Any

from ds_wizard.core.check import dsschema
from ds_wizard.core.check.dsschema import (
    ORDER_AUTOCAST,
    ORDER_CHECKPOINT,
    ORDER_ERROR_CHECK,
    ORDER_PRECISION_BOTH,
    ORDER_REMOVED,
    ORDER_SCALARS,
    ORDER_WORLD,
    Finding,
)

MISSING_BOTH = "Either train_batch_size or train_micro_batch_size_per_gpu needs to be provided"
DTYPE_NAMES = ("torch.float16", "fp16", "float16", "half", "torch.float32", "fp32", "float32",
               "float", "torch.int8", "int8", "torch.bfloat16", "bf16", "bfloat16")
# Blocks DeepSpeed reads with ``.get``/``.keys()``: anything but an object crashes it.
# Values: where ``_initialize_params`` reads each one (the dsschema ORDER_* scale).
OBJECT_BLOCKS = {"activation_checkpointing": 11, "torch_autocast": 17, "optimizer": 18,
                 "scheduler": 18, "flops_profiler": 19, "autotuning": 19, "pipeline": 21,
                 "data_efficiency": 22, "checkpoint": 24, "data_types": 24}


def _err(order: int, path: str, message: str, error_type: str) -> Finding:
    return Finding("error", path, message, order, error_type)


def removed_keys(cfg: dict[str, Any]) -> list[Finding]:
    """``_reject_removed_config_keys``: the first thing DeepSpeed does."""
    schema = dsschema.load_schema()
    out = [_err(ORDER_REMOVED, key, f"{key!r} was removed from DeepSpeed "
                f"{schema['deepspeed_version']}: {msg} (delete the block)", "DeepSpeedConfigError")
           for key, msg in schema["removed_top_level_keys"].items() if key in cfg]
    zero = cfg.get("zero_optimization")
    if isinstance(zero, dict):
        out += [_err(ORDER_REMOVED, f"zero_optimization.{key}", f"zero_optimization.{key} was "
                     f"removed from DeepSpeed: {msg}", "DeepSpeedConfigError")
                for key, msg in schema["removed_zero_keys"].items() if key in zero]
    return out


def effective_world(cfg: dict[str, Any], world_size: int) -> tuple[Any, Finding | None]:
    """DeepSpeed's ``world_size``: with a ``sequence_parallel_size`` key and no mpu it is
    ``dist.get_world_size() / sequence_parallel_size`` (true division, a float)."""
    if "sequence_parallel_size" not in cfg:
        return world_size, None
    sp = cfg["sequence_parallel_size"]
    try:
        return world_size / sp, None
    except (TypeError, ZeroDivisionError) as exc:
        return world_size, _err(ORDER_WORLD, "sequence_parallel_size",
                                f"sequence_parallel_size is {json.dumps(sp)}; DeepSpeed divides "
                                f"the world size by it and fails ({type(exc).__name__}: {exc}); "
                                "write a whole number >= 1", type(exc).__name__)


def scalar_findings(cfg: dict[str, Any]) -> list[Finding]:
    """The top-level getters that raise before the pydantic blocks are built."""
    out: list[Finding] = []
    for key in ("communication_data_type", "seq_parallel_communication_data_type"):
        val = cfg.get(key)
        if val is None:
            continue
        if not isinstance(val, str):
            out.append(_err(ORDER_SCALARS, key, f"{key} is {json.dumps(val)}; write one of "
                            '"fp16", "bf16", "fp32"', "AttributeError"))
        elif val.lower() not in ("fp16", "bf16", "fp32"):
            out.append(_err(ORDER_SCALARS, key, f"{key} is {json.dumps(val)}; DeepSpeed "
                            'supports "fp16", "bf16" and "fp32"', "ValueError"))
    op = cfg.get("gradient_allreduce_op", "mean")
    if (op.lower() if isinstance(op, str) else op) not in ("mean", "sum"):
        out.append(_err(ORDER_SCALARS, "gradient_allreduce_op", f"gradient_allreduce_op is "
                        f'{json.dumps(op)}; DeepSpeed supports "mean" and "sum"', "ValueError"))
    for key, order in OBJECT_BLOCKS.items():
        if key in cfg and not isinstance(cfg[key], dict):
            out.append(_err(order, key, f"{key} is {json.dumps(cfg[key])}; DeepSpeed "
                            "reads it as an object {...} and crashes on anything else",
                            "AttributeError"))
    return out


def late_findings(cfg: dict[str, Any]) -> list[Finding]:
    """Checks DeepSpeed makes after the precision blocks: autocast dtype, checkpoint modes,
    ``data_types.keep_in_fp32_modules``."""
    out: list[Finding] = []
    autocast = cfg.get("torch_autocast")
    if isinstance(autocast, dict) and "dtype" in autocast:
        dtype = autocast["dtype"]
        if not isinstance(dtype, str) or dtype not in DTYPE_NAMES:
            out.append(_err(ORDER_AUTOCAST, "torch_autocast.dtype",
                            f"torch_autocast.dtype is {json.dumps(dtype)}; write one of "
                            '"bf16", "fp16", "fp32"', "ValueError"))
    ckpt = cfg.get("checkpoint", {})
    if isinstance(ckpt, dict):
        mode = ckpt.get("tag_validation", "Warn")
        if not isinstance(mode, str) or mode.upper() not in ("WARN", "IGNORE", "FAIL"):
            out.append(_err(ORDER_CHECKPOINT, "checkpoint.tag_validation",
                            f"checkpoint.tag_validation is {json.dumps(mode)}; write "
                            '"Warn", "Ignore" or "Fail"',
                            "DeepSpeedConfigError" if isinstance(mode, str) else "AttributeError"))
        par = ckpt.get("parallel_write", {})
        stage = par.get("pipeline_stage", False) if isinstance(par, dict) else False
        if stage not in (True, False):
            out.append(_err(ORDER_CHECKPOINT, "checkpoint.parallel_write.pipeline_stage",
                            "checkpoint.parallel_write.pipeline_stage must be true or false",
                            "DeepSpeedConfigError"))
    types = cfg.get("data_types", {})
    if isinstance(types, dict) and "keep_in_fp32_modules" in types:
        keep = types["keep_in_fp32_modules"]
        if keep != "auto" and not (isinstance(keep, list) and all(isinstance(n, str)
                                                                   for n in keep)):
            out.append(_err(ORDER_CHECKPOINT, "data_types.keep_in_fp32_modules",
                            'data_types.keep_in_fp32_modules must be "auto" or a list of name '
                            "patterns", "DeepSpeedConfigError"))
    return out


def precision_both(blocks: dict[str, dict[str, Any]]) -> list[Finding]:
    """fp16 and bf16 both on, after pydantic read ``"yes"``/``"on"``/``1`` as true."""
    if blocks.get("fp16", {}).get("enabled") is True \
            and blocks.get("bf16", {}).get("enabled") is True:
        return [_err(ORDER_PRECISION_BOTH, "fp16.enabled", "fp16 and bf16 are both enabled; "
                     'DeepSpeed stops with "bfloat16 and fp16 modes cannot be simultaneously '
                     'enabled" (keep one: bf16 on Ampere or newer)', "AssertionError")]
    return []


def batch_outcome(train: Any, micro: Any, gas: Any, world: Any
                  ) -> tuple[tuple[Any, Any, Any], str | None, str | None, tuple[str, ...]]:
    """``_set_batch_related_parameters`` + ``_batch_assertion`` on the raw values, with
    Python's own operators as DeepSpeed uses them. Returns the triplet as DeepSpeed holds
    it, the exception type and message (None when it accepts) and the derived keys."""
    derived: tuple[str, ...] = ()
    try:
        if train is not None and micro is not None and gas is not None:
            pass
        elif train is not None and micro is not None:
            gas = train // micro
            gas //= world
            derived = ("gradient_accumulation_steps",)
        elif train is not None and gas is not None:
            micro = train // world
            micro //= gas
            derived = ("train_micro_batch_size_per_gpu",)
        elif micro is not None and gas is not None:
            train = _times(_times(micro, gas), world)
            derived = ("train_batch_size",)
        elif train is not None:
            gas, micro = 1, train // world
            derived = ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps")
        elif micro is not None:
            train, gas = _times(micro, world), 1
            derived = ("train_batch_size", "gradient_accumulation_steps")
        else:
            return (train, micro, gas), "AssertionError", MISSING_BOTH, derived
        if not train > 0:
            return (train, micro, gas), "AssertionError", \
                f"Train batch size: {train} has to be greater than 0", derived
        if not micro > 0:
            return (train, micro, gas), "AssertionError", \
                f"Micro batch size per gpu: {micro} has to be greater than 0", derived
        if not gas > 0:
            return (train, micro, gas), "AssertionError", \
                f"Gradient accumulation steps: {gas} has to be greater than 0", derived
        if train != _times(_times(micro, gas), world):
            return (train, micro, gas), "AssertionError", (
                "Check batch related parameters. train_batch_size is not equal to "
                "micro_batch_per_gpu * gradient_acc_step * world_size "
                f"{train} != {micro} * {gas} * {world}"), derived
    except (TypeError, ZeroDivisionError) as exc:
        return (train, micro, gas), type(exc).__name__, str(exc), derived
    return (train, micro, gas), None, None, derived


def _times(a: Any, b: Any) -> Any:
    """``a * b`` as DeepSpeed computes it, except a string or list repeated a huge number
    of times: Python would build it (gigabytes) before DeepSpeed's next comparison with 0
    fails with the TypeError raised here."""
    for seq, n in ((a, b), (b, a)):
        if isinstance(seq, (str, list)) and isinstance(n, int) and abs(n) > 4096:
            raise TypeError(f"'>' not supported between instances of '{type(seq).__name__}' "
                            "and 'int'")
    return a * b


def error_check(cfg: dict[str, Any], blocks: dict[str, dict[str, Any]]) -> list[Finding]:
    """``_do_error_check``: the rules that tie blocks together, after the batch."""
    zero = blocks.get("zero_optimization", {})
    stage = zero.get("stage", 0)
    zero_on = isinstance(stage, int) and 1 <= stage <= 3
    out: list[Finding] = []
    op = cfg.get("gradient_allreduce_op", "mean")
    if isinstance(op, str) and op.lower() == "sum" and stage == 3:
        out.append(_err(ORDER_ERROR_CHECK, "gradient_allreduce_op",
                        "gradient_allreduce_op 'sum' is not supported with ZeRO stage 3",
                        "ValueError"))
    for block, key in (("fp16", "fp16_master_weights_and_grads"),
                       ("bf16", "bf16_master_weights_and_grads"),
                       ("bf16", "bf16_optimizer_states")):
        if blocks.get(block, {}).get(key) is True and not zero_on:
            out.append(_err(ORDER_ERROR_CHECK, f"{block}.{key}",
                            f"{block}.{key} needs ZeRO stage 1, 2 or 3", "AssertionError"))
    bf16 = blocks.get("bf16", {})
    if bf16.get("bf16_optimizer_states") is True and zero_on \
            and bf16.get("bf16_master_weights_and_grads") is not True:
        out.append(_err(ORDER_ERROR_CHECK, "bf16.bf16_optimizer_states",
                        "bf16.bf16_optimizer_states needs bf16.bf16_master_weights_and_grads",
                        "AssertionError"))
    return out


# Top-level keys DeepSpeed reads with ``get_scalar_param`` and then uses in plain Python
# (``wall_clock_breakdown | flops_profiler.enabled``, comparisons, ``.lower()``), with the
# type of DeepSpeed 0.19's default. A value of another type is not mirrored: what DeepSpeed
# does with ``"yes"`` there depends on code the fast verdict does not copy.
PLAIN_SCALARS: dict[str, tuple[type, ...]] = {
    "dataloader_drop_last": (bool,), "disable_allgather": (bool,),
    "disable_python_gc": (bool,), "dump_state": (bool,), "managed_gradient_accumulation": (bool,),
    "memory_breakdown": (bool,), "prescale_gradients": (bool,),
    "use_data_before_expert_parallelism": (bool,), "wall_clock_breakdown": (bool,),
    "zero_allow_untested_optimizer": (bool,), "zero_force_ds_cpu_optimizer": (bool,),
    "gradient_clipping": (int, float), "gradient_predivide_factor": (int, float),
    "steps_per_print": (int,), "log_level": (str,),
}
# Blocks DeepSpeed reads with plain dict code (``.get``, ``[key]``, arithmetic on what it
# finds) that the fast verdict does not model field by field: any content beyond
# ``{"enabled": false}`` sends the config to DeepSpeed's own verdict.
PLAIN_CODE_BLOCKS = ("data_efficiency", "curriculum_learning", "pipeline", "sparse_attention",
                     "elasticity", "compression_training", "eigenvalue",
                     "progressive_layer_drop", "quantize_training", "nebula", "amp",
                     "datastates", "expert_parallel", "sequence_parallel", "zenflow")
# the blocks of dsschema's ``plain_blocks``: fields read by get_scalar_param; a value that
# is not a JSON scalar there, or an ``enabled`` that is not a bool, is not mirrored
SCALAR_BLOCKS = ("activation_checkpointing", "flops_profiler", "autotuning", "aio")
#: nesting the fast verdict walks itself; deeper, DeepSpeed's own recursion decides
MAX_MIRRORED_DEPTH = 32
#: integers past this are not mirrored (pydantic and DeepSpeed's arithmetic differ on them)
MAX_MIRRORED_INT = 1 << 53


def unmirrored(cfg: dict[str, Any]) -> list[str]:
    """Where ``cfg`` holds a value the fast verdict does not mirror: a plain-code scalar of
    an unexpected type, an optimizer or scheduler ``type`` that is not a string or
    ``params`` that are not an object, an integer past 2**53, nesting deeper than
    :data:`MAX_MIRRORED_DEPTH`. For such a config only DeepSpeed's own verdict is
    trusted (``ds_wizard.deepcheck.verdict_for``)."""
    out: list[str] = []
    for key, types in PLAIN_SCALARS.items():
        if key not in cfg:
            continue
        value = cfg[key]  # null too: DeepSpeed takes the null, not its default
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            out.append(f"{key} = {_short(value)}")
    for block in ("optimizer", "scheduler"):
        section = cfg.get(block)
        if isinstance(section, dict):
            kind = section.get("type")
            if kind is not None and not isinstance(kind, str):
                out.append(f"{block}.type = {_short(kind)}")
            params = section.get("params")
            if "params" in section and params is not None and not isinstance(params, dict):
                out.append(f"{block}.params = {_short(params)}")
    for block in PLAIN_CODE_BLOCKS:
        if block in cfg and cfg[block] not in ({}, {"enabled": False}, None):
            out.append(f"the {block} block")
    if "timers" in cfg and not isinstance(cfg["timers"], dict):
        out.append(f"timers = {_short(cfg['timers'])}")  # DeepSpeed tests `in` on it
    for block in SCALAR_BLOCKS:
        section = cfg.get(block)
        if block in cfg and not isinstance(section, dict):
            out.append(f"{block} = {_short(section)}")
        if isinstance(section, dict):
            for key, value in section.items():
                odd = isinstance(value, (dict, list)) or (
                    key == "enabled" and not isinstance(value, bool))
                if odd:
                    out.append(f"{block}.{key} = {_short(value)}")
    out += _odd_values(cfg)
    return out


def _odd_values(cfg: Any) -> list[str]:
    """Deep nesting and huge integers anywhere, found without recursion."""
    found: list[str] = []
    stack: list[tuple[Any, str, int]] = [(cfg, "", 0)]
    while stack and len(found) < 3:
        value, path, depth = stack.pop()
        if depth > MAX_MIRRORED_DEPTH:
            found.append(f"{path or 'the config'} nests more than {MAX_MIRRORED_DEPTH} levels")
            continue
        if isinstance(value, dict):
            stack += [(v, f"{path}.{k}" if path else str(k), depth + 1) for k, v in value.items()]
        elif isinstance(value, list):
            stack += [(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
        elif isinstance(value, int) and not isinstance(value, bool) \
                and abs(value) > MAX_MIRRORED_INT:
            found.append(f"{path} = {_short(value)}")
    return found


def _short(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (ValueError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."
