"""Derive ds-wizard's DeepSpeed config schema from DeepSpeed's own pydantic models.

This module imports DeepSpeed (seconds), so it lives outside ``ds_wizard.core`` and runs
only when the schema is regenerated (``python -m ds_wizard.dsschema_gen``) or when
``tests/test_dsschema_drift.py`` checks that the shipped copy still matches the installed
DeepSpeed. ``ds_wizard.core.check.dsschema`` reads the result without importing anything heavy.

What is derived, and what is declared:
- every model reachable from the blocks below: its fields, aliases, types, numeric
  constraints, enum values, ``extra`` policy and deprecated fields (read from pydantic);
- the removed top-level and ZeRO keys (read from ``deepspeed.runtime.config``);
- the custom validators of each model, as name + a hash of their source, so a validator
  DeepSpeed adds or changes shows up as drift (their logic is mirrored by hand in
  ``ds_wizard.core.check.dsschema.VALIDATORS``);
- which top-level key feeds which model is declared in ``BLOCKS`` (it lives in
  ``DeepSpeedConfig._initialize_params``' code, which cannot be introspected).
"""

from __future__ import annotations

import enum
import hashlib
import inspect
import json
import pathlib
import sys
import types
import typing
from typing import Any

SCHEMA_PATH = pathlib.Path(__file__).parent / "core" / "check" / "data" / "deepspeed_schema.json"

# top-level key -> (module, model class). ``None`` model: validated by plain code, not pydantic.
BLOCKS: dict[str, tuple[str, str]] = {
    "zero_optimization": ("deepspeed.runtime.zero.config", "DeepSpeedZeroConfig"),
    "fp16": ("deepspeed.runtime.precision_config", "DeepSpeedFP16Config"),
    "bf16": ("deepspeed.runtime.precision_config", "DeepSpeedBF16Config"),
    "comms_logger": ("deepspeed.comm.config", "CommsLoggerConfig"),
    "hybrid_engine": ("deepspeed.runtime.config", "HybridEngineConfig"),
    "weight_quantization": ("deepspeed.inference.config", "WeightQuantConfig"),
    "compile": ("deepspeed.compile.config", "CompileConfig"),
    "tensor_parallel": ("deepspeed.runtime.tensor_parallel.config", "TPTrainingConfig"),
    "timers.throughput": ("deepspeed.utils.config", "DeepSpeedThroughputTimerConfig"),
    # the four monitor blocks are fields of one model built from the top level
    "(monitor)": ("deepspeed.monitor.config", "DeepSpeedMonitorConfig"),
}


# Blocks DeepSpeed reads with plain dict lookups (no pydantic): the keys it looks up are
# recorded by running its own reader on a dict that remembers every lookup.
PLAIN_BLOCKS: dict[str, tuple[str, str]] = {
    "activation_checkpointing": ("deepspeed.runtime.activation_checkpointing.config",
                                 "DeepSpeedActivationCheckpointingConfig"),
    "flops_profiler": ("deepspeed.profiling.config", "DeepSpeedFlopsProfilerConfig"),
    "autotuning": ("deepspeed.autotuning.config", "DeepSpeedAutotuningConfig"),
    "aio": ("deepspeed.runtime.swap_tensor.aio_config", "get_aio_config"),
}


class _RecordingDict(dict):
    """A dict that remembers every key looked up, however DeepSpeed looks."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.seen: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.seen.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.seen.add(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self.seen.add(str(key))
        return super().__contains__(key)


def _plain_block_keys(block: str, reader: Any) -> list[str]:
    keys: set[str] = set()
    for inner in ({}, {"enabled": True}):  # some keys are read only when enabled
        record = _RecordingDict(inner)
        reader({block: record})
        keys |= record.seen
    return sorted(keys)


def _type(tp: Any, models: dict[str, Any]) -> dict[str, Any]:
    """A JSON descriptor of one annotation."""
    from pydantic import BaseModel

    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is typing.Any or tp is object:
        return {"kind": "any"}
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        desc = (_type(members[0], models) if len(members) == 1
                else {"kind": "union", "of": [_type(a, models) for a in members]})
        return {"kind": "optional", "of": desc} if type(None) in args else desc
    if origin is typing.Literal:
        return {"kind": "literal", "values": list(args)}
    if origin in (list, typing.List) or tp is list:  # noqa: UP006
        return {"kind": "list", "of": _type(args[0], models) if args else {"kind": "any"}}
    if origin in (tuple, typing.Tuple) or tp is tuple:  # noqa: UP006
        return {"kind": "list", "of": {"kind": "any"}}
    if origin in (dict, typing.Dict) or tp in (dict, typing.Dict):  # noqa: UP006
        return {"kind": "dict"}
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        _model(tp, models)
        return {"kind": "model", "ref": tp.__name__}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        base = "int" if issubclass(tp, int) else "str"
        values = sorted({m.value for m in tp}, key=str)
        return {"kind": "enum", "base": base, "values": values}
    if tp is bool:
        return {"kind": "bool"}
    if tp is int or (isinstance(tp, type) and issubclass(tp, int)):
        return {"kind": "int"}
    if tp is float:
        return {"kind": "float"}
    if tp is str:
        return {"kind": "str"}
    if tp is pathlib.Path:
        return {"kind": "path"}
    # arbitrary types (torch.dtype): pydantic checks isinstance, which no JSON value passes
    return {"kind": "instance", "of": f"{tp.__module__}.{tp.__qualname__}"}


_NO_JSON = object()


def _jsonable(value: Any) -> Any:
    """The default as JSON, or ``_NO_JSON`` (factories, tensors, models)."""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, pathlib.Path):
        value = str(value)
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return _NO_JSON
    return value


def _constraints(metadata: list[Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in metadata:
        for name in ("gt", "ge", "lt", "le"):
            value = getattr(item, name, None)
            if value is not None:
                out[name] = value
    return out


def _validators(cls: Any) -> dict[str, str]:
    decorators = cls.__pydantic_decorators__
    out = {}
    for group in (decorators.field_validators, decorators.model_validators):
        for name, dec in group.items():
            source = inspect.getsource(dec.func)
            out[name] = hashlib.sha256(source.encode()).hexdigest()[:16]
    return dict(sorted(out.items()))


def _model(cls: Any, models: dict[str, Any]) -> None:
    name = cls.__name__
    if name in models:
        return
    models[name] = {}  # placeholder: models can refer to each other
    fields = {}
    for fname, info in cls.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        entry: dict[str, Any] = {"type": _type(info.annotation, models)}
        if info.alias and info.alias != fname:
            entry["alias"] = info.alias
        default = _jsonable(info.default)
        if default is not _NO_JSON:
            entry["default"] = default
        cons = _constraints(info.metadata)
        if cons:
            entry["constraints"] = cons
        if extra.get("deprecated"):
            entry["deprecated"] = True
            if extra.get("new_param"):
                entry["new_param"] = extra["new_param"]
        fields[fname] = entry
    models[name] = {
        "extra": cls.model_config.get("extra", "ignore"),
        "populate_by_name": bool(cls.model_config.get("populate_by_name")),
        "drops_auto": hasattr(cls, "_deprecated_fields_check"),
        "fields": fields,
        "validators": _validators(cls),
    }


def derive() -> dict[str, Any]:
    """The schema for the installed DeepSpeed, as a JSON-ready dict."""
    import importlib

    import deepspeed
    from deepspeed.runtime import config as rc

    models: dict[str, Any] = {}
    blocks = {}
    for key, (module, attr) in BLOCKS.items():
        cls = getattr(importlib.import_module(module), attr)
        _model(cls, models)
        blocks[key] = cls.__name__
    plain = {key: _plain_block_keys(key, getattr(importlib.import_module(module), attr))
             for key, (module, attr) in PLAIN_BLOCKS.items()}
    return {
        "deepspeed_version": deepspeed.__version__,
        "blocks": blocks,
        "plain_blocks": plain,
        "models": dict(sorted(models.items())),
        "removed_top_level_keys": dict(sorted(rc._REMOVED_TOP_LEVEL_CONFIG_KEYS.items())),
        "removed_zero_keys": dict(sorted(rc._REMOVED_ZERO_CONFIG_KEYS.items())),
    }


def render(schema: dict[str, Any]) -> str:
    """The shipped file's exact text (stable, so the drift test can compare bytes)."""
    return json.dumps(schema, indent=1, sort_keys=False, ensure_ascii=False) + "\n"


def main() -> int:
    text = render(derive())
    SCHEMA_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
