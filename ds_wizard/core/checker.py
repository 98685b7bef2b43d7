"""Reading, checking and repairing DeepSpeed JSON config files, without importing DeepSpeed.

The batch verdict comes from :func:`ds_wizard.core.batch.resolve`, which reproduces
DeepSpeed's own resolution and messages. On top of it this module reports the mistakes
that DeepSpeed either crashes on with an unhelpful error or silently ignores: ``"auto"``
values outside the HF Trainer, numbers written as strings, fp16 and bf16 together, a ZeRO
stage outside 0–3, misspelt top-level keys and a scheduler whose step counts disagree.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ds_wizard.core import batch as batchmath
from ds_wizard.core.errors import ConfigFileError, DsWizardError
from ds_wizard.core.fsio import read_input
from ds_wizard.core.limits import MAX_GLOBAL_BATCH

TRAIN = "train_batch_size"
MICRO = "train_micro_batch_size_per_gpu"
GAS = "gradient_accumulation_steps"
BATCH_KEYS = (TRAIN, MICRO, GAS)

DEEPSPEED_VERDICT = "DeepSpeed would stop with"
MAX_CONFIG_BYTES = 4 * 1024 * 1024
# No real run has a global batch anywhere near this; a bigger number is a typo (an extra
# digit, a token count pasted into a sample count) and would make DeepSpeed allocate
# or loop absurdly.
MAX_BATCH_VALUE = MAX_GLOBAL_BATCH  # core/limits.py: the one definition

# Top-level keys DeepSpeed 0.19 reads (runtime/config.py and deepspeed/__init__.py).
# tests/test_checker_keys.py records the keys the installed DeepSpeed actually looks up,
# so this list cannot silently fall behind.
KNOWN_TOP_LEVEL_KEYS = frozenset({
    "activation_checkpointing", "aio", "autotuning", "bf16", "bfloat16", "checkpoint",
    "comet", "comms_logger", "communication_data_type", "compile", "csv_monitor",
    "data_efficiency", "data_parallel_size", "data_types", "dataloader_drop_last",
    "datastates_ckpt", "disable_allgather", "disable_python_gc", "dump_state",
    "expert_parallel", "flops_profiler", "fp16", "gradient_accumulation_steps",
    "gradient_allreduce_op", "gradient_clipping", "gradient_predivide_factor",
    "hybrid_engine", "log_level", "managed_gradient_accumulation", "memory_breakdown",
    "optimizer", "pipeline", "prescale_gradients", "scheduler",
    "seq_parallel_communication_data_type", "sequence_parallel_size", "steps_per_print",
    "tensor_parallel", "tensorboard", "timers", "torch_autocast", "train_batch_size",
    "train_micro_batch_size_per_gpu", "use_data_before_expert_parallelism",
    "vocabulary_size", "wall_clock_breakdown", "wandb", "weight_quantization",
    "zero_allow_untested_optimizer", "zero_force_ds_cpu_optimizer", "zero_optimization",
})

# Blocks DeepSpeed 0.19 refuses outright (``_REMOVED_TOP_LEVEL_CONFIG_KEYS``): an old
# config that still has one fails at start-up with DeepSpeedConfigError.
REMOVED_TOP_LEVEL_KEYS = frozenset({
    "amp", "compression_training", "curriculum_learning", "eigenvalue", "elasticity",
    "graph_harvesting", "nebula", "progressive_layer_drop", "quantize_training",
    "sparse_attention", "sparse_gradients",
})

# Paths where "auto" is DeepSpeed's own value, not an HF Trainer placeholder.
NATIVE_AUTO_PATHS = frozenset({"data_types.keep_in_fp32_modules"})

SCHEDULERS_NEEDING_TOTAL = ("WarmupDecayLR", "WarmupCosineLR")
KNOWN_SCHEDULERS = ("LRRangeTest", "OneCycle", "WarmupLR", "WarmupDecayLR", "WarmupCosineLR")


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a DeepSpeed JSON file into a dict, keeping key order.

    Every way the file can be unusable becomes a one-line :class:`ConfigFileError`.
    """
    p = Path(path)
    # a regular file only, read with a cap: /dev/zero or a FIFO is refused, not read
    raw = read_input(p, limit=MAX_CONFIG_BYTES, what=".json config file",
                     error=ConfigFileError)
    return parse_config_bytes(raw, str(p))


def parse_config_bytes(raw: bytes, origin: str = "config") -> dict[str, Any]:
    """Bytes → dict, with the same errors as :func:`load_config_file`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigFileError(
            f"{origin}: not UTF-8 text (bad byte 0x{raw[exc.start]:02x} at offset {exc.start})",
            "save the file as UTF-8 JSON",
        ) from exc
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise ConfigFileError(f"{origin}: the file is empty",
                              "write a JSON object, or create one with `ds-wizard --auto`")
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise ConfigFileError(
            f"{origin}: invalid JSON at line {exc.lineno}:{exc.colno}: {exc.msg}",
            "fix the syntax there; plain JSON without comments or trailing commas is "
            "what both DeepSpeed and the HF Trainer read",
        ) from exc
    except _DuplicateKey as exc:
        raise ConfigFileError(f"{origin}: key {exc.args[0]!r} appears twice",
                              "DeepSpeed refuses duplicate keys; keep one") from exc
    except (ValueError, RecursionError) as exc:
        # int() digit limit or absurd nesting: not a config anyone wrote by hand
        raise ConfigFileError(f"{origin}: unreadable JSON ({exc})",
                              "is this the right file?") from exc
    if not isinstance(data, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
            type(data), "a number"
        )
        raise ConfigFileError(f"{origin}: the top level is {kind}, not a JSON object",
                              'a DeepSpeed config looks like {"train_batch_size": 128, ...}')
    return data


class _DuplicateKey(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


@dataclass(frozen=True)
class BatchValue:
    """One batch key as written, and the integer it stands for (when it is one)."""

    key: str
    raw: Any
    value: int | None  # what DeepSpeed will compute with; None when absent or unusable
    problem: str | None = None

    @property
    def present(self) -> bool:
        return self.raw is not None


def read_batch_value(cfg: dict[str, Any], key: str) -> BatchValue:
    """Classify one batch key. Only real JSON integers pass unchanged."""
    if key not in cfg or cfg[key] is None:
        return BatchValue(key, None, None)
    raw = cfg[key]
    if isinstance(raw, bool):
        return BatchValue(key, raw, None,
                          f"{key} is {json.dumps(raw)}; it must be a whole number such as 8")
    if isinstance(raw, int):
        if raw <= 0:
            return BatchValue(key, raw, raw, f"{key} is {raw}; it must be at least 1")
        if raw > MAX_BATCH_VALUE:
            return BatchValue(key, raw, raw,
                              f"{key} is {raw}, implausibly large (over {MAX_BATCH_VALUE:,}); "
                              "check for an extra digit")
        return BatchValue(key, raw, raw)
    if isinstance(raw, float):
        if math.isfinite(raw) and raw.is_integer():
            shown = int(raw)
            return BatchValue(key, raw, shown,
                              f"{key} is the float {raw}; write the integer {shown} "
                              "(a float batch size breaks the data loader)")
        return BatchValue(key, raw, None,
                          f"{key} is {raw}; it must be a whole number of samples")
    if isinstance(raw, str):
        if raw.strip().lower() == "auto":
            return BatchValue(key, raw, None,
                              f'{key} is "auto", which only the Hugging Face Trainer fills in; '
                              "standalone DeepSpeed rejects it: write a number "
                              "(or run `ds-wizard fix`)")
        text = raw.strip()
        if text.lstrip("+-").isdigit():
            return BatchValue(key, raw, int(text),
                              f'{key} is the string "{raw}"; DeepSpeed needs the number '
                              f"{int(text)} without quotes")
        return BatchValue(key, raw, None, f"{key} is the string {raw!r}; it must be a number")
    return BatchValue(key, raw, None,
                      f"{key} is a JSON {type(raw).__name__}; it must be a whole number")


@dataclass
class CheckReport:
    """The outcome of :func:`check_config`. ``valid`` means no errors were found."""

    valid: bool
    world_size: int
    train_batch_size: int | None
    train_micro_batch_size_per_gpu: int | None
    gradient_accumulation_steps: int | None
    formula: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # DeepSpeed's own exception for the batch triplet, e.g. "AssertionError: ... 16 != 4 * 8 * 4"
    deepspeed_error: str | None = None
    derived: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)
    # the three batch values exactly as the file has them (None when absent)
    written: dict[str, Any] = field(default_factory=dict)

    @property
    def headline(self) -> str:
        """The verdict in one line: the formula when valid; otherwise the first problem's
        cause. A batch value written wrongly comes before DeepSpeed's verdict, which it
        causes; a plain mismatch reads best as the formula (``16 != 4 × 8 × 4``)."""
        if not self.errors:
            return self.formula
        first = self.errors[0]
        if first.startswith(DEEPSPEED_VERDICT) and "!=" in self.formula:
            return self.formula
        return first

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_config(cfg: dict[str, Any], world_size: int) -> CheckReport:
    """Everything wrong with ``cfg`` for a data-parallel size of ``world_size``."""
    if world_size < 1:
        raise ValueError(f"world size must be >= 1, got {world_size}")
    errors: list[str] = []
    warnings: list[str] = []
    suggestions: list[str] = []

    values = {k: read_batch_value(cfg, k) for k in BATCH_KEYS}
    errors += [v.problem for v in values.values() if v.problem]
    # shown to the user: the values as the integers they stand for ("8" → 8)
    res = batchmath.resolve(values[TRAIN].value, values[MICRO].value, values[GAS].value,
                            world_size)
    ds_error = None
    not_numbers = [v for v in values.values()
                   if v.present and not isinstance(v.raw, (int, float))]
    if not_numbers:
        ds_error = (
            "TypeError: DeepSpeed cannot compute with "
            + ", ".join(f"{v.key}={json.dumps(v.raw)}" for v in not_numbers)
        )
    else:
        # DeepSpeed's verdict on the raw numbers: it does the same arithmetic on floats
        # and booleans, so its message is reproduced for them too
        raw = batchmath.resolve(values[TRAIN].raw, values[MICRO].raw, values[GAS].raw,
                                world_size)
        if not raw.valid:
            message = raw.error
            if raw.error_type == "ZeroDivisionError" and any(
                isinstance(v.raw, float) for v in values.values()
            ):
                message = "float floor division by zero"  # Python's wording for floats
            ds_error = f"{raw.error_type}: {message}"
            # after the value problems: a -4 or a 4.5 is the cause, this is the consequence
            errors.append(f"{DEEPSPEED_VERDICT} {ds_error}")
    if ds_error or not res.valid or any(v.problem for v in values.values()):
        suggestions += _batch_suggestions(cfg, world_size)

    errors += _precision_problems(cfg)
    errors += _zero_problems(cfg)
    errors += _key_problems(cfg)
    errors += _auto_values(cfg)
    scheduler_errors, scheduler_warnings = _scheduler_problems(cfg)
    errors += scheduler_errors
    warnings += scheduler_warnings

    return CheckReport(
        valid=not errors,
        world_size=world_size,
        train_batch_size=res.train_batch_size,
        train_micro_batch_size_per_gpu=res.micro_batch,
        gradient_accumulation_steps=res.grad_accum,
        formula=res.formula,
        errors=errors,
        warnings=warnings,
        deepspeed_error=ds_error,
        derived=list(res.derived),
        suggestions=suggestions,
        written={k: v.raw for k, v in values.items()},
    )


def _batch_suggestions(cfg: dict[str, Any], world_size: int) -> list[str]:
    out = []
    for keep in ("micro", "global"):
        try:
            _, _, after = fix_config(cfg, world_size, keep=keep)  # type: ignore[arg-type]
        except DsWizardError as exc:
            out.append(f"--keep {keep}: not possible: {exc.one_line()}")
            continue
        out.append(
            f"--keep {keep}: {after.formula} (train_batch_size {after.train_batch_size}, "
            f"micro {after.micro_batch}, gradient accumulation {after.grad_accum})"
        )
    return out


def _enabled(block: Any) -> bool:
    # "auto" is reported on its own; under the HF Trainer only one of the two ends up on
    if not isinstance(block, dict):
        return False
    flag = block.get("enabled")
    if isinstance(flag, str):
        return flag.strip().lower() == "true"
    return bool(flag)


def _precision_problems(cfg: dict[str, Any]) -> list[str]:
    bf16_key = "bf16" if "bf16" in cfg else "bfloat16"
    if _enabled(cfg.get("fp16")) and _enabled(cfg.get(bf16_key)):
        return [
            f"fp16 and {bf16_key} are both enabled; DeepSpeed stops with \"bfloat16 and fp16 "
            "modes cannot be simultaneously enabled\" (keep one: bf16 on Ampere or newer)"
        ]
    return []


def _zero_problems(cfg: dict[str, Any]) -> list[str]:
    if "zero_optimization" not in cfg:
        return []
    zero = cfg["zero_optimization"]
    if not isinstance(zero, dict):
        return [f"zero_optimization is {json.dumps(zero)}; it must be an object such as "
                '{"stage": 2}']
    if "stage" not in zero:
        return []
    stage = zero["stage"]
    if isinstance(stage, str) and stage.strip().isdigit():
        return [f'zero_optimization.stage is the string "{stage}"; write the number '
                f"{int(stage)} without quotes"]
    if isinstance(stage, bool) or not isinstance(stage, int) or not 0 <= stage <= 3:
        return [f"zero_optimization.stage is {json.dumps(stage)}; ZeRO stages are 0, 1, 2 or 3"]
    return []


def _key_problems(cfg: dict[str, Any]) -> list[str]:
    errors = []
    for key in cfg:
        if key in KNOWN_TOP_LEVEL_KEYS:
            continue
        if key in REMOVED_TOP_LEVEL_KEYS:
            errors.append(f"{key!r} was removed from DeepSpeed (0.19 refuses configs that "
                          "contain it); delete the block")
            continue
        close = difflib.get_close_matches(key, sorted(KNOWN_TOP_LEVEL_KEYS), n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        errors.append(f"unknown top-level key {key!r}: DeepSpeed ignores it{hint}")
    return errors


def _auto_values(cfg: dict[str, Any]) -> list[str]:
    """``"auto"`` anywhere outside the batch keys (those have their own message)."""
    found: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")
        elif (isinstance(node, str) and node.strip().lower() == "auto"
              and path not in NATIVE_AUTO_PATHS and path not in BATCH_KEYS):
            found.append(path)

    walk(cfg, "")
    if not found:
        return []
    shown = ", ".join(found[:5]) + (f" (+{len(found) - 5} more)" if len(found) > 5 else "")
    return [f'"auto" in {shown}: only the Hugging Face Trainer fills these in; standalone '
            "DeepSpeed rejects them (write real values)"]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def _scheduler_problems(cfg: dict[str, Any]) -> tuple[list[str], list[str]]:
    sched = cfg.get("scheduler")
    if sched is None:
        return [], []
    if not isinstance(sched, dict):
        return [f"scheduler is {json.dumps(sched)}; it must be an object with type and params"], []
    errors: list[str] = []
    warnings: list[str] = []
    kind = sched.get("type")
    params = sched.get("params", {})
    if not isinstance(params, dict):
        return [f"scheduler.params is {json.dumps(params)}; it must be an object"], []
    if kind not in KNOWN_SCHEDULERS and isinstance(kind, str) and kind.lower() != "auto":
        close = difflib.get_close_matches(kind, KNOWN_SCHEDULERS, n=1)
        warnings.append(f"scheduler type {kind!r} is not one of DeepSpeed's "
                        f"({', '.join(KNOWN_SCHEDULERS)})"
                        + (f"; did you mean {close[0]!r}?" if close else ""))
    for key in ("total_num_steps", "warmup_num_steps"):
        value = params.get(key)
        if isinstance(value, str) and value.strip().isdigit():
            errors.append(f'scheduler.params.{key} is the string "{value}"; write the number '
                          f"{int(value)} without quotes")
    total = _number(params.get("total_num_steps"))
    warmup = _number(params.get("warmup_num_steps"))
    if kind in SCHEDULERS_NEEDING_TOTAL and "total_num_steps" not in params:
        warnings.append(f"{kind} needs scheduler.params.total_num_steps (the number of "
                        "optimizer steps in the run); without it the schedule does not "
                        "match the run")
    if warmup is not None and warmup <= 0:
        warnings.append(f"scheduler.params.warmup_num_steps is {warmup}; DeepSpeed's "
                        "warm-up schedulers need a positive whole number")
    if total is not None and total <= 0:
        warnings.append(f"scheduler.params.total_num_steps is {total}; it must be positive")
    if total is not None and warmup is not None and 0 < total < warmup:
        warnings.append(f"scheduler warm-up ({warmup:g} steps) is longer than the whole run "
                        f"(total_num_steps {total:g}): the learning rate never reaches its peak")
    for lo, hi in (("warmup_min_lr", "warmup_max_lr"), ("cycle_min_lr", "cycle_max_lr")):
        a, b = _number(params.get(lo)), _number(params.get(hi))
        if a is not None and b is not None and a > b:
            warnings.append(f"scheduler.params.{lo} ({a:g}) is above {hi} ({b:g})")
    return errors, warnings


def fix_config(
    cfg: dict[str, Any],
    world_size: int,
    keep: Literal["micro", "global"] = "micro",
) -> tuple[dict[str, Any], batchmath.Resolution, batchmath.Resolution]:
    """Repair the batch triplet so DeepSpeed accepts it on ``world_size`` data-parallel ranks.

    ``keep="micro"`` keeps the micro-batch and gradient accumulation and recomputes
    ``train_batch_size``; ``keep="global"`` keeps ``train_batch_size`` and picks micro and
    accumulation that divide it. Every other key and the key order are preserved. A config
    DeepSpeed already accepts comes back unchanged (the fix is idempotent).

    Returns ``(new_cfg, before, after)``; ``before`` is the resolution of the values as
    written (unusable values count as missing).
    """
    if world_size < 1:
        raise ValueError(f"world size must be >= 1, got {world_size}")
    if keep not in ("micro", "global"):
        raise ValueError(f"keep must be 'micro' or 'global', got {keep!r}")
    values = {k: read_batch_value(cfg, k) for k in BATCH_KEYS}
    before = batchmath.resolve(values[TRAIN].value, values[MICRO].value, values[GAS].value,
                               world_size)
    if before.valid and not any(v.problem for v in values.values()):
        return dict(cfg), before, before

    if keep == "micro":
        micro, gas = _fix_keep_micro(values, world_size)
    else:
        micro, gas = _fix_keep_global(values, world_size)
    train = micro * gas * world_size
    new_cfg = _with_triplet(cfg, train, micro, gas)
    after = batchmath.resolve(train, micro, gas, world_size)
    return new_cfg, before, after


def _usable(v: BatchValue) -> int | None:
    """A value the fix may keep: a positive integer, or a string/float that clearly is one."""
    if v.value is not None and 0 < v.value <= MAX_BATCH_VALUE:
        return v.value
    return None


def _explain_unusable(v: BatchValue, instead: str) -> DsWizardError:
    shown = "missing" if not v.present else f"{json.dumps(v.raw)}"
    return DsWizardError(f"cannot keep {v.key}: it is {shown}",
                         f"set it to a whole number >= 1, or use {instead}")


def _fix_keep_micro(values: dict[str, BatchValue], world_size: int) -> tuple[int, int]:
    micro = _usable(values[MICRO])
    if micro is None:
        raise _explain_unusable(values[MICRO], "--keep global")
    gas = _usable(values[GAS])
    if gas is None:
        if values[GAS].present:
            raise _explain_unusable(values[GAS], "--keep global")
        # no accumulation written: aim for the global batch the file asked for, if any
        target = _usable(values[TRAIN])
        gas = batchmath.pick_grad_accum(world_size, micro, target)[0] if target else 1
    return micro, gas


def _fix_keep_global(values: dict[str, BatchValue], world_size: int) -> tuple[int, int]:
    target = _usable(values[TRAIN])
    if target is None:
        raise _explain_unusable(values[TRAIN], "--keep micro")
    # no memory limits here: any split of the per-rank batch is a candidate
    sol = batchmath.solve(world_size, target, max_micro=target, max_gas=target)
    if not sol.exact:
        near = " or ".join(str(x) for x in (sol.lower, sol.upper) if x is not None)
        raise DsWizardError(
            f"train_batch_size {target} cannot be split evenly over {world_size} "
            f"data-parallel rank(s)",
            f"nearest valid global batches: {near}; or use --keep micro",
        )
    micro_now = _usable(values[MICRO])
    gas_now = _usable(values[GAS])
    pairs = sol.pairs  # largest micro first
    if micro_now is not None:
        for m, g in pairs:
            if m <= micro_now:
                # the largest micro-batch not above the current one: never needs more memory
                return m, g
    if gas_now is not None:
        for m, g in pairs:
            if g == gas_now:
                return m, g
    # nothing to anchor on: DeepSpeed's own default for a lone train_batch_size
    return target // world_size, 1


def _with_triplet(cfg: dict[str, Any], train: int, micro: int, gas: int) -> dict[str, Any]:
    """A copy with the three values set; existing keys keep their places and missing
    batch keys are inserted next to the ones present (or first, when none are)."""
    wanted = {TRAIN: train, MICRO: micro, GAS: gas}
    missing = [k for k in BATCH_KEYS if k not in cfg]
    present_batch = [k for k in cfg if k in wanted]
    anchor = present_batch[-1] if present_batch else None
    out: dict[str, Any] = {}
    if anchor is None:
        out.update({k: wanted[k] for k in BATCH_KEYS})
    for key, value in cfg.items():
        out[key] = wanted.get(key, value)
        if key == anchor:
            out.update({k: wanted[k] for k in missing})
    return out
