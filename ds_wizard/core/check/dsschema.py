"""DeepSpeed's verdict on the blocks of a config, from a schema derived from DeepSpeed itself.

``data/deepspeed_schema.json`` is generated from DeepSpeed's own pydantic config models by
``ds_wizard.dsschema_gen`` (a test regenerates it from the installed DeepSpeed and fails on
drift). This module interprets it the way pydantic's lax mode validates the dicts
``DeepSpeedConfig`` passes in: ``"yes"``/``"on"``/``"1"`` are booleans, ``"3"``/``3.0``/``true``
are integers, ``"CPU"`` is not ``"cpu"``, unknown keys are refused (``extra="forbid"``) and a
top-level ``"auto"`` value is dropped (``DeepSpeedConfigModel.__init__``) so the default
applies. Nothing heavy is imported: this runs on ``check``'s fast path.

Findings carry ``order``: the place in ``DeepSpeedConfig.__init__`` where DeepSpeed would
stop, so the first error reported is the one DeepSpeed actually raises.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

SCHEMA_FILE = Path(__file__).parent / "data" / "deepspeed_schema.json"

# Where DeepSpeedConfig stops, in the order it evaluates things (runtime/config.py).
ORDER_REMOVED = 0
ORDER_WORLD = 1
ORDER_SCALARS = 2
ORDER_BLOCK = {"zero_optimization": 10, "comms_logger": 12, "(monitor)": 13, "fp16": 14,
               "bf16": 15, "hybrid_engine": 20, "weight_quantization": 30, "compile": 31,
               "timers.throughput": 32, "tensor_parallel": 33}
ORDER_PRECISION_BOTH = 16
ORDER_AUTOCAST = 17
ORDER_CHECKPOINT = 25
ORDER_BATCH = 50
ORDER_ERROR_CHECK = 60

_TRUE = {"1", "on", "t", "true", "y", "yes"}
_FALSE = {"0", "off", "f", "false", "n", "no"}


@dataclass(frozen=True)
class Finding:
    """One thing DeepSpeed refuses (``error``) or quietly changes or ignores (``warning``)."""

    severity: str  # "error" | "warning"
    path: str
    message: str
    order: int = 0
    error_type: str = "ValidationError"  # the exception DeepSpeed raises for an error


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The shipped schema (a few kB of JSON; read once)."""
    from ds_wizard.core.base.fsio import read_json

    return read_json(SCHEMA_FILE, limit=16 << 20, what="schema file")  # type: ignore[return-value]


def deepspeed_version() -> str:
    return str(load_schema()["deepspeed_version"])


class _Invalid(Exception):
    """A value pydantic would refuse; the message says what was expected."""


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, float) and value in (0.0, 1.0):
        return bool(value)
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise _Invalid("a boolean (true or false)")


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid("a finite whole number")
        if value.is_integer():
            return int(value)
        raise _Invalid("a whole number")
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        # pydantic accepts "3.0" but not "3.5"
        head, dot, tail = text.partition(".")
        if dot and tail.strip("0") == "" and head.lstrip("+-").isdigit():
            return int(head)
    raise _Invalid("a whole number")


def _as_float(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise _Invalid("a number")


def _check_constraints(value: float, cons: dict[str, float]) -> None:
    for name, bound in cons.items():
        ok = {"gt": value > bound, "ge": value >= bound, "lt": value < bound,
              "le": value <= bound}[name]
        if not ok:
            sign = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}[name]
            raise _Invalid(f"a number {sign} {bound:g}")


class _Validator:
    """One pass over a config; collects findings."""

    def __init__(self, schema: dict[str, Any], order: int) -> None:
        self.schema = schema
        self.order = order
        self.findings: list[Finding] = []

    def error(self, path: str, message: str, error_type: str = "ValidationError") -> None:
        self.findings.append(Finding("error", path, message, self.order, error_type))

    def warn(self, path: str, message: str) -> None:
        self.findings.append(Finding("warning", path, message, self.order))

    def value(self, desc: dict[str, Any], value: Any, path: str) -> Any:
        """Validate one value against a type descriptor; returns the coerced value."""
        kind = desc["kind"]
        if kind == "optional":
            return None if value is None else self.value(desc["of"], value, path)
        if kind == "any":
            return value
        if kind == "model":
            return self.model(desc["ref"], value, path, top=False)
        if kind == "union":
            for member in desc["of"]:
                try:
                    return self._scalar(member, value)
                except _Invalid:
                    continue
            raise _Invalid(" or ".join(m["kind"] for m in desc["of"]))
        if kind == "list":
            if not isinstance(value, (list, tuple)):
                raise _Invalid("a list")
            return [self.value(desc["of"], v, f"{path}[{i}]") for i, v in enumerate(value)]
        return self._scalar(desc, value)

    def _scalar(self, desc: dict[str, Any], value: Any) -> Any:
        kind = desc["kind"]
        if kind == "bool":
            return _as_bool(value)
        if kind == "int":
            return _as_int(value)
        if kind == "float":
            return _as_float(value)
        if kind == "str":
            if not isinstance(value, str):
                raise _Invalid("a string")
            return value
        if kind == "path":
            if not isinstance(value, str):
                raise _Invalid("a path (a string)")
            return value
        if kind == "dict":
            if not isinstance(value, dict):
                raise _Invalid("an object")
            return value
        if kind == "enum":
            allowed = desc["values"]
            if desc["base"] == "int":
                try:
                    number = _as_int(value) if not isinstance(value, float) or \
                        value.is_integer() else None
                except _Invalid:
                    number = None
                if number in allowed:
                    return number
            elif value in allowed:
                return value
            raise _Invalid("one of " + ", ".join(json.dumps(a) for a in allowed))
        if kind == "literal":
            if value in desc["values"] and type(value) is not bool:
                return value
            raise _Invalid("one of " + ", ".join(json.dumps(a) for a in desc["values"]))
        if kind == "instance":
            raise _Invalid(f"a Python {desc['of']} object, which a JSON file cannot hold")
        return self.value(desc, value, "")

    def model(self, name: str, data: Any, path: str, top: bool) -> dict[str, Any] | None:
        """Validate ``data`` as model ``name``. ``top``: DeepSpeed builds it with
        ``Model(**data)``, where a non-mapping is a TypeError (nested, a ValidationError).
        Returns the field values (defaults filled in) or None."""
        spec = self.schema["models"][name]
        where = path or "the top level"
        before = BEFORE_VALIDATORS.get(name)
        if before is not None:
            try:
                data = before(data)
            except TypeError as exc:  # raised as is by DeepSpeed's validator, not wrapped
                self.error(path, f"{where}: {exc}", "TypeError")
                return None
        if not isinstance(data, dict):
            self.error(path, f"{where} is {json.dumps(data)}; it must be an object "
                             "{...}", "TypeError" if top else "ValidationError")
            return None
        fields = spec["fields"]
        by_alias = {f.get("alias"): n for n, f in fields.items() if f.get("alias")}
        out: dict[str, Any] = {n: f.get("default") for n, f in fields.items()}
        given: set[str] = set()
        for key, raw in data.items():
            sub = f"{path}.{key}" if path else key
            # DeepSpeedConfigModel.__init__ drops "auto" (nested models go through it too)
            if spec["drops_auto"] and raw == "auto":
                default = fields.get(by_alias.get(key, key), {}).get("default")
                if key in fields or key in by_alias:
                    self.warn(sub, f'{sub} is "auto": DeepSpeed drops it and uses its default '
                                   f"({json.dumps(default)}); only the HF Trainer fills "
                                   '"auto" in')
                continue
            fname = key if key in fields and spec["populate_by_name"] else by_alias.get(key)
            if fname is None and key in fields:
                fname = key
            if fname is None:
                self._unknown(spec, sub, key, sorted({*fields, *by_alias}))
                continue
            field = fields[fname]
            try:
                coerced = self.value(field["type"], raw, sub)
                if "constraints" in field and coerced is not None:
                    _check_constraints(coerced, field["constraints"])
            except _Invalid as exc:
                self.error(sub, f"{sub} is {json.dumps(raw)}; DeepSpeed needs {exc}")
                continue
            out[fname] = coerced
            given.add(fname)
            if field.get("deprecated"):
                new = field.get("new_param", "")
                self.warn(sub, f"{sub} is deprecated in DeepSpeed"
                               + (f"; use {new}" if new else ""))
        self._deprecated_pairs(fields, given, path)
        for validator in spec["validators"]:
            check = VALIDATORS.get(f"{name}.{validator}")
            if check is not None:
                check(self, data, out, path)
        return out

    def _unknown(self, spec: dict[str, Any], path: str, key: str, known: list[str]) -> None:
        close = _close_matches(key, known, n=1, cutoff=0.75)
        if not close:
            close = [k for k in known if k.lower() == key.lower()]
        hint = f"; did you mean {close[0]!r}?" if close else ""
        if spec["extra"] == "forbid":
            self.error(path, f"unknown key {path}: DeepSpeed refuses it{hint}")
        else:
            self.warn(path, f"unknown key {path}: DeepSpeed ignores it{hint}")

    def _deprecated_pairs(self, fields: dict[str, Any], given: set[str], path: str) -> None:
        for name in given:
            new = fields[name].get("new_param", "")
            # "offload_param or offload_optimizer" style notes name no single field
            if new and new in fields and new in given:
                self.error(f"{path}.{name}", f"{path}.{name} (deprecated) and {path}.{new} "
                                             "are both set; keep only " + new,
                           "AssertionError")


# --- DeepSpeed's custom validators, mirrored. Keys: "Model.validator"; the schema lists
# each model's validators with a hash of their source, so a change in DeepSpeed is drift.

def _fp16_loss_scale(v: _Validator, data: dict[str, Any], out: dict[str, Any], path: str) -> None:
    if "loss_scale" not in data or (data["loss_scale"] == "auto"):
        return
    raw = data["loss_scale"]
    sub = f"{path}.loss_scale"
    if isinstance(raw, bool):
        v.error(sub, f"{sub} must be a number, not a boolean")
        return
    try:
        number = float(raw)
    except (TypeError, ValueError):
        return  # already reported as not a number
    if not math.isfinite(number):
        v.error(sub, f"{sub} must be a finite number (not inf/-inf/nan)")
    elif number < 0:
        v.error(sub, f"{sub} must be >= 0 (0 enables dynamic loss scaling)")


def _fp16_integer_params(v: _Validator, data: dict[str, Any], out: dict[str, Any],
                         path: str) -> None:
    for key in ("loss_scale_window", "min_loss_scale"):
        if key in data and data[key] != "auto" and isinstance(data[key], bool):
            v.error(f"{path}.{key}", f"{path}.{key} must be an integer, not a boolean")


def _fp16_dynamic(v: _Validator, data: dict[str, Any], out: dict[str, Any], path: str) -> None:
    if not isinstance(out.get("enabled"), bool) or not out["enabled"]:
        return
    if out.get("loss_scale") != 0:
        return
    for key in ("loss_scale_window", "min_loss_scale"):
        value = out.get(key)
        if isinstance(value, int) and value <= 0:
            v.error(f"{path}.{key}", f"{path}.{key} must be > 0 when dynamic loss scaling "
                                     "is on (loss_scale 0)")


def _zero_grad_norm(v: _Validator, data: dict[str, Any], out: dict[str, Any], path: str) -> None:
    if out.get("compute_grad_norm") is False and out.get("stage") not in (1, 2):
        v.error(f"{path}.compute_grad_norm",
                "compute_grad_norm=false is supported only with ZeRO stage 1 or 2")


def _zero_offload_ratio(v: _Validator, data: dict[str, Any], out: dict[str, Any],
                        path: str) -> None:
    offload = out.get("offload_optimizer")
    if isinstance(offload, dict) and isinstance(offload.get("ratio"), float) \
            and offload["ratio"] < 1.0 and out.get("stage") != 3:
        v.error(f"{path}.offload_optimizer.ratio",
                "partial optimizer offload (ratio < 1) is supported only with ZeRO stage 3")


def _zenflow_fields(v: _Validator, data: dict[str, Any], out: dict[str, Any], path: str) -> None:
    if out.get("select_strategy") not in ("auto", "step", "epoch"):
        v.error(f"{path}.select_strategy", 'select_strategy must be "auto", "step" or "epoch"')
    for key in ("select_interval", "update_interval"):
        value = out.get(key)
        if isinstance(value, str) and value != "auto":
            v.error(f"{path}.{key}", f'{path}.{key}: a string here must be "auto"')
    if isinstance(out.get("update_interval"), int) and out["update_interval"] < 1:
        v.error(f"{path}.update_interval", f"{path}.update_interval must be at least 1")


def _noop(v: _Validator, data: dict[str, Any], out: dict[str, Any], path: str) -> None:
    """A validator that only sets derived values or logs; it never refuses a config."""


def _leaf_strings_to_lists(data: Any) -> dict[str, Any]:
    """``DeepSpeedZeroLeafModuleConfig._coerce_container_types``: None is ``{}``, a string
    is a 1-list, anything but a mapping is a TypeError."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TypeError("leaf_module configuration must be a mapping of fields to values")
    return {k: [v] if k in ("classes", "names", "name_suffixes") and isinstance(v, str) else v
            for k, v in data.items()}


# mode="before" validators: they rewrite the input before the fields are read
BEFORE_VALIDATORS = {"DeepSpeedZeroLeafModuleConfig": _leaf_strings_to_lists}

VALIDATORS = {
    "DeepSpeedFP16Config._validate_loss_scale": _fp16_loss_scale,
    "DeepSpeedFP16Config._reject_non_integer_scale_params": _fp16_integer_params,
    "DeepSpeedFP16Config._validate_dynamic_loss_scale_params": _fp16_dynamic,
    "DeepSpeedZeroConfig.overlap_comm_valid": _noop,
    "DeepSpeedZeroConfig.compute_grad_norm_valid": _zero_grad_norm,
    "DeepSpeedZeroConfig.offload_ratio_check": _zero_offload_ratio,
    "DeepSpeedZeroConfig.elastic_checkpoint_deprecated": _noop,
    "DeepSpeedZeroOffloadOptimizerConfig.set_pipeline": _noop,
    "DeepSpeedMonitorConfig.check_enabled": _noop,
    "ZenFlowConfig.validate_fields": _zenflow_fields,
    # strings become one-element lists, then entries are de-duplicated: nothing refused
    # that the field types do not already refuse
    "DeepSpeedZeroLeafModuleConfig._coerce_container_types": _noop,  # see BEFORE_VALIDATORS
    "DeepSpeedZeroLeafModuleConfig._validate_entries": _noop,
}


def validate_blocks(cfg: dict[str, Any]) -> tuple[list[Finding], dict[str, dict[str, Any]]]:
    """Every pydantic-validated block of ``cfg``, as DeepSpeed builds them.

    Returns the findings and the validated values per block (``zero_optimization``,
    ``fp16``, ``bf16`` …), for the cross-block checks that follow.
    """
    schema = load_schema()
    findings: list[Finding] = []
    values: dict[str, dict[str, Any]] = {}
    for block, model in schema["blocks"].items():
        v = _Validator(schema, ORDER_BLOCK[block])
        data, present, path = _block_input(cfg, block)
        if present:
            if block == "zero_optimization" and isinstance(data, bool):
                v.warn(block, f"zero_optimization: {json.dumps(data)} is DeepSpeed's legacy "
                              f'form (stage {int(data)}); write {{"stage": {int(data)}}}')
                legacy = {"stage": int(data)}
                if data:
                    legacy["allgather_bucket_size"] = cfg.get("allgather_size", 5e8)
                data = legacy
            out = v.model(model, data, path, top=True)
            if out is not None:
                values[block] = out
        else:
            values[block] = v.model(model, {}, path, top=True) or {}
        findings += v.findings
    return findings, values


def _block_input(cfg: dict[str, Any], block: str) -> tuple[Any, bool, str]:
    """What DeepSpeed hands to the block's model, whether the file has it, and its path."""
    if block == "(monitor)":
        keys = ("tensorboard", "wandb", "csv_monitor", "comet")
        return ({k: cfg.get(k, {}) for k in keys}, any(k in cfg for k in keys), "")
    if block == "timers.throughput":
        timers = cfg.get("timers")
        if isinstance(timers, dict) and "throughput" in timers:
            return timers["throughput"], True, block
        return {}, False, block
    if block == "bf16" and cfg.get("bf16") is None and "bfloat16" in cfg:
        return cfg["bfloat16"], True, "bfloat16"
    if block == "bf16" and "bf16" in cfg and cfg["bf16"] is None:
        return {}, False, block  # DeepSpeed reads None as absent here
    return cfg.get(block, {}), block in cfg, block


def _close_matches(word: str, candidates: object, n: int = 1, cutoff: float = 0.6) -> list[str]:
    """difflib's, imported only when there is a misspelling to explain (start-up time)."""
    import difflib

    return difflib.get_close_matches(word, candidates, n=n, cutoff=cutoff)  # type: ignore[arg-type]
