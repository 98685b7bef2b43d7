"""Reading, checking and repairing DeepSpeed JSON config files, without importing DeepSpeed.

The batch verdict comes from :func:`ds_wizard.core.batch.batchmath.resolve`, which reproduces
DeepSpeed's own resolution and messages. On top of it this module reports the mistakes
that DeepSpeed either crashes on with an unhelpful error or silently ignores: ``"auto"``
values outside the HF Trainer, numbers written as strings, fp16 and bf16 together, a ZeRO
stage outside 0–3, misspelt top-level keys and a scheduler whose step counts disagree.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ds_wizard.core.base.errors import ConfigFileError, DsWizardError
from ds_wizard.core.base.fsio import read_input
from ds_wizard.core.base.limits import MAX_GLOBAL_BATCH
from ds_wizard.core.batch import batchmath
from ds_wizard.core.check import dsschema, verdict
from ds_wizard.core.check.trackers import tracker_findings

TRAIN = "train_batch_size"
MICRO = "train_micro_batch_size_per_gpu"
GAS = "gradient_accumulation_steps"
BATCH_KEYS = (TRAIN, MICRO, GAS)

DEEPSPEED_VERDICT = "DeepSpeed would stop with"
MAX_CONFIG_BYTES = 4 * 1024 * 1024
# No real run has a global batch anywhere near this; a bigger number is a typo (an extra
# digit, a token count pasted into a sample count) and would make DeepSpeed allocate
# or loop absurdly.
MAX_BATCH_VALUE = MAX_GLOBAL_BATCH  # core/base/limits.py: the one definition

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
    data = _parse_text(text, origin)
    if not isinstance(data, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
            type(data), "a number"
        )
        raise ConfigFileError(f"{origin}: the top level is {kind}, not a JSON object",
                              'a DeepSpeed config looks like {"train_batch_size": 128, ...}')
    return data


class _DuplicateKey(Exception):
    pass


class _NotANumber(Exception):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NotANumber(name)


def _parse_text(text: str, origin: str) -> Any:
    """Plain JSON on the fast path; hjson (comments, trailing commas, unquoted strings) as
    DeepSpeed reads files when JSON fails. NaN and Infinity are refused: no DeepSpeed
    setting takes them, and ``fix`` must never write them back."""
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates,
                          parse_constant=_refuse_constant)
        _refuse_deep(data, origin)
        _refuse_non_finite(data, origin)  # 1e999 reads as infinity
        return data
    except json.JSONDecodeError as exc:
        first = exc
    except _DuplicateKey as exc:
        raise _duplicate(origin, exc) from exc
    except _NotANumber as exc:
        raise _nan(origin, exc) from exc
    except (ValueError, RecursionError) as exc:
        # int() digit limit or absurd nesting: not a config anyone wrote by hand
        raise ConfigFileError(f"{origin}: unreadable JSON ({exc})",
                              "is this the right file?") from exc
    import hjson  # only for files that are not plain JSON (about 40 ms to import)

    try:
        data = hjson.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        raise _duplicate(origin, exc) from exc
    except OverflowError as exc:  # hjson's reading of 1e999
        raise _nan(origin, _NotANumber("a number too large to be finite")) from exc
    except (hjson.HjsonDecodeError, ValueError, RecursionError, IndexError, TypeError,
            KeyError, AttributeError) as exc:
        # hjson's own failures on truncated input ("{/*" is an IndexError inside it)
        raise ConfigFileError(
            f"{origin}: neither JSON nor hjson: JSON fails at line {first.lineno}:"
            f"{first.colno}: {first.msg}",
            "fix the syntax there (DeepSpeed reads files with hjson: // comments and "
            "trailing commas are fine, unbalanced braces are not)",
        ) from exc
    _refuse_deep(data, origin)
    _refuse_non_finite(data, origin)
    return data


#: nesting of a config: DeepSpeed's blocks nest four levels; past this DeepSpeed's own
#: recursive code fails (a RecursionError at a few hundred), and so would a rewrite by fix
MAX_CONFIG_DEPTH = 64


def _refuse_deep(data: Any, origin: str) -> None:
    """Refuse nesting past :data:`MAX_CONFIG_DEPTH`, found without recursion, so that no
    later step (the verdict, DeepSpeed, ``fix``'s rewrite) recurses into it."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigFileError(f"{origin}: nests more than {MAX_CONFIG_DEPTH} levels deep",
                                  "no DeepSpeed config nests like this (DeepSpeed stops with "
                                  "a RecursionError); is this the right file?")
        if isinstance(value, dict):
            stack += [(v, depth + 1) for v in value.values()]
        elif isinstance(value, list):
            stack += [(v, depth + 1) for v in value]


def _duplicate(origin: str, exc: _DuplicateKey) -> ConfigFileError:
    return ConfigFileError(f"{origin}: key {exc.args[0]!r} appears twice",
                           "DeepSpeed refuses duplicate keys; keep one")


def _nan(origin: str, exc: _NotANumber) -> ConfigFileError:
    return ConfigFileError(f"{origin}: {exc.args[0]} is not a number any DeepSpeed setting "
                           "takes", "write a finite number there")


def _refuse_non_finite(node: Any, origin: str) -> None:
    if isinstance(node, float) and not math.isfinite(node):
        raise _nan(origin, _NotANumber(repr(node)))
    if isinstance(node, dict):
        for value in node.values():
            _refuse_non_finite(value, origin)
    elif isinstance(node, list):
        for value in node:
            _refuse_non_finite(value, origin)


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
        if (too_big := batchmath.too_large(key, raw)) is not None:
            return BatchValue(key, raw, raw, too_big)
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
                              "standalone DeepSpeed rejects it: write a number, or check the "
                              "file as the Trainer fills it with --hf "
                              "per_device_train_batch_size=N")
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
    world_size: int | float  # DeepSpeed's: a float when sequence_parallel_size divides it
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
    strict: bool = False
    deepspeed_version: str = ""
    # errors that are ds-wizard's own rules, not DeepSpeed's (e.g. --sp vs the config)
    own_errors: list[str] = field(default_factory=list)
    # values the fast verdict does not mirror (verdict.unmirrored): only DeepSpeed's own
    # verdict (ds_wizard.deepcheck.settle) decides such a config
    unmirrored: list[str] = field(default_factory=list)

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


def check_config(cfg: dict[str, Any], world_size: int, *, strict: bool = False,
                 sequence_parallel: int | None = None) -> CheckReport:
    """DeepSpeed's whole verdict on ``cfg`` for ``world_size`` ranks (data-parallel size
    before sequence parallelism), plus warnings where ds-wizard knows better.

    ``sequence_parallel``: the ``--sp`` degree when the user gave one. A config's own
    ``sequence_parallel_size`` divides the world size as DeepSpeed does; the two must agree.
    ``strict``: warnings count as errors for ``valid``.
    """
    if world_size < 1:
        raise ValueError(f"world size must be >= 1, got {world_size}")
    findings, blocks = dsschema.validate_blocks(cfg)
    findings += verdict.removed_keys(cfg)
    findings += verdict.scalar_findings(cfg)
    findings += verdict.precision_both(blocks)
    findings += verdict.late_findings(cfg)

    sp_written = cfg.get("sequence_parallel_size")
    world: Any
    if "sequence_parallel_size" in cfg:
        world, problem = verdict.effective_world(cfg, world_size)
        if problem:
            findings.append(problem)
        elif sequence_parallel is not None and sp_written != sequence_parallel:
            findings.append(dsschema.Finding(
                "error", "sequence_parallel_size",
                f"the config says sequence_parallel_size {json.dumps(sp_written)} but --sp is "
                f"{sequence_parallel}; make them agree (DeepSpeed uses the config's value)",
                dsschema.ORDER_WORLD, "ds-wizard"))
    else:
        sp = sequence_parallel or 1
        world = world_size // sp if world_size % sp == 0 else world_size / sp
    shown_world: Any = world
    if isinstance(world, float) and world.is_integer():
        shown_world = int(world)

    values = {k: read_batch_value(cfg, k) for k in BATCH_KEYS}
    raw = [cfg.get(k) for k in BATCH_KEYS]
    triplet, ds_type, ds_message, derived = verdict.batch_outcome(*raw, world)
    batch_fails = ds_type is not None
    if batch_fails:
        # the cause, in ds-wizard's words, before DeepSpeed's own message
        findings += [dsschema.Finding("error", v.key, v.problem, dsschema.ORDER_BATCH - 1,
                                      "ds-wizard") for v in values.values() if v.problem]
        findings.append(dsschema.Finding(
            "error", "train_batch_size", f"{DEEPSPEED_VERDICT} {ds_type}: {ds_message}",
            dsschema.ORDER_BATCH, ds_type or ""))
    else:
        findings += [dsschema.Finding("warning", v.key, f"{v.problem} (DeepSpeed accepts it)")
                     for v in values.values() if v.problem]
        findings += verdict.error_check(cfg, blocks)
    findings += _top_level_warnings(cfg)
    findings += _auto_values(cfg)
    findings += tracker_findings(cfg)
    scheduler_errors, scheduler_warnings = _scheduler_problems(cfg)
    findings += [dsschema.Finding("warning", "scheduler", m)
                 for m in scheduler_errors + scheduler_warnings]

    errors = sorted((f for f in findings if f.severity == "error"), key=lambda f: f.order)
    warnings = [f.message for f in findings if f.severity == "warning"]
    first = next((f for f in errors if f.error_type != "ds-wizard"), None)
    ds_error = None
    if first is not None:
        ds_error = (f"{ds_type}: {ds_message}" if first.order == dsschema.ORDER_BATCH
                    else f"{first.error_type}: {first.message}")
    # shown to the user: the values as the integers they stand for ("8" → 8)
    # (a negative or zero world, from a sequence_parallel_size below 1, is no world at all)
    int_world = shown_world if isinstance(shown_world, int) and shown_world >= 1 else None
    res = None
    if int_world is not None:
        res = batchmath.resolve(values[TRAIN].value, values[MICRO].value, values[GAS].value,
                                int_world)
    if ds_type == "TypeError":
        formula = res.formula if res else ""
    else:
        formula = _formula(triplet, shown_world, batch_fails)
    suggestions: list[str] = []
    if int_world is not None and (batch_fails or any(v.problem for v in values.values())):
        suggestions = _batch_suggestions(cfg, int_world)
    return CheckReport(
        valid=not errors and not (strict and warnings),
        world_size=shown_world,
        train_batch_size=res.train_batch_size if res else None,
        train_micro_batch_size_per_gpu=res.micro_batch if res else None,
        gradient_accumulation_steps=res.grad_accum if res else None,
        formula=formula,
        errors=[f.message for f in errors],
        warnings=warnings,
        deepspeed_error=ds_error,
        derived=list(derived),
        suggestions=suggestions,
        written={k: v.raw for k, v in values.items()},
        unmirrored=verdict.unmirrored(cfg),
        strict=strict,
        deepspeed_version=dsschema.deepspeed_version(),
        own_errors=[f.message for f in errors if f.error_type == "ds-wizard"
                    and f.order == dsschema.ORDER_WORLD],
    )


def _formula(triplet: tuple[Any, Any, Any], world: Any, fails: bool) -> str:
    if any(v is None for v in triplet):
        return ""

    def show(v: Any) -> str:
        return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)

    train, micro, gas = triplet
    sign = "!=" if fails else "="
    return f"{show(train)} {sign} {show(micro)} × {show(gas)} × {show(world)}"


def _batch_suggestions(cfg: dict[str, Any], world_size: int) -> list[str]:
    """``--keep MODE`` arguments that work, each with what it gives (as a shell comment)."""
    out = []
    for keep in ("micro", "global"):
        try:
            _, _, after = fix_config(cfg, world_size, keep=keep)  # type: ignore[arg-type]
        except DsWizardError:
            continue
        out.append(f"--keep {keep}  # {after.formula} (train_batch_size "
                   f"{after.train_batch_size}, micro {after.micro_batch}, gradient "
                   f"accumulation {after.grad_accum})")
    return out


def _top_level_warnings(cfg: dict[str, Any]) -> list[dsschema.Finding]:
    out = []
    # blocks DeepSpeed reads with plain lookups: a key it never looks up is ignored
    for block, known in dsschema.load_schema().get("plain_blocks", {}).items():
        if isinstance(cfg.get(block), dict):
            for key in cfg[block]:
                if key not in known:
                    close = _close_matches(key, known, n=1, cutoff=0.75)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    out.append(dsschema.Finding(
                        "warning", f"{block}.{key}",
                        f"unknown key {block}.{key}: DeepSpeed ignores it{hint}"))
    for key in cfg:
        if key in KNOWN_TOP_LEVEL_KEYS or key in REMOVED_TOP_LEVEL_KEYS:
            continue
        close = _close_matches(key, sorted(KNOWN_TOP_LEVEL_KEYS), n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        out.append(dsschema.Finding("warning", key,
                                    f"unknown top-level key {key!r}: DeepSpeed ignores it{hint}"))
    return out


# Blocks whose "auto" values dsschema already reports (dropped, or refused when nested).
_MODEL_BLOCKS = ("zero_optimization", "fp16", "bf16", "bfloat16", "comms_logger",
                 "hybrid_engine", "weight_quantization", "compile", "tensor_parallel",
                 "timers", "tensorboard", "wandb", "csv_monitor", "comet")


def _auto_values(cfg: dict[str, Any]) -> list[dsschema.Finding]:
    """``"auto"`` that DeepSpeed's config parser keeps as a string (optimizer and scheduler
    params, gradient_clipping …): it accepts the file, but only the HF Trainer replaces
    these, and the engine computes with them later."""
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

    for key, value in cfg.items():
        if key not in _MODEL_BLOCKS:
            walk(value, key)
    if not found:
        return []
    shown = ", ".join(found[:5]) + (f" (+{len(found) - 5} more)" if len(found) > 5 else "")
    return [dsschema.Finding("warning", found[0], f'"auto" in {shown}: DeepSpeed\'s config '
                             "parser keeps the string; only the Hugging Face Trainer fills "
                             "these in (use `ds-wizard check --hf ...`, or write real values)")]


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
        close = _close_matches(kind, KNOWN_SCHEDULERS, n=1)
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

    modes = {"micro": _fix_keep_micro, "global": _fix_keep_global}
    try:
        micro, gas = modes[keep](values, world_size)
    except DsWizardError as exc:
        other = "global" if keep == "micro" else "micro"
        try:
            modes[other](values, world_size)
        except DsWizardError:
            # neither mode can work: say what to write, not "try the other mode"
            hint = exc.hint or ""
            for tail in (f", or use --keep {other}", f"; or use --keep {other}"):
                hint = hint.replace(tail, "")
            if hint.startswith("set it to"):
                hint = _what_to_write(values)
            raise DsWizardError(exc.message, hint) from exc
        raise
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


def _what_to_write(values: dict[str, BatchValue]) -> str:
    autos = [v.key for v in values.values() if isinstance(v.raw, str)
             and v.raw.strip().lower() == "auto"]
    if autos:
        return ("these are \"auto\": under the HF Trainer run `ds-wizard fix --hf "
                "per_device_train_batch_size=N,gradient_accumulation_steps=M`; for standalone "
                f"DeepSpeed write a whole number for {MICRO} (e.g. 4) and run fix again")
    return f"write a whole number for {MICRO} (e.g. 4) and run fix again"


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


def _close_matches(word: str, candidates: object, n: int = 1, cutoff: float = 0.6) -> list[str]:
    """difflib's, imported only when there is a misspelling to explain (start-up time)."""
    import difflib

    return difflib.get_close_matches(word, candidates, n=n, cutoff=cutoff)  # type: ignore[arg-type]
