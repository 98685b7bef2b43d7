"""Strict validation of preset data against :mod:`ds_wizard.core.presets.schema`, with pydantic.

This is the only core module that imports pydantic. It is imported when data has to be
checked (a preset file not yet in the validation cache, ``--set`` overrides, the TUI's
edits); a preset read from the cache never reaches it.

The data is handed to pydantic as JSON: in strict mode pydantic accepts a table for a
dataclass field only from JSON input, and TOML's scalar types map onto JSON's one to one
once dates and times (which no preset field takes) are refused up front.
"""

from __future__ import annotations

import difflib
import json
from datetime import date, datetime, time
from functools import lru_cache
from typing import Any, get_args

from pydantic import TypeAdapter, ValidationError

from ds_wizard.core.presets.schema import PresetSpec, field_types, is_section

# pydantic's names for "this key is not in the schema": models say extra_forbidden,
# dataclasses unexpected_keyword_argument.
_UNKNOWN_KEY = ("extra_forbidden", "unexpected_keyword_argument")


class SpecProblems(ValueError):
    """Every problem found, each one line; ``str()`` is the first plus a count."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(problems[0] + more)


@lru_cache(maxsize=1)
def _adapter() -> TypeAdapter[PresetSpec]:
    return TypeAdapter(PresetSpec)


def validate_spec(data: dict[str, Any]) -> PresetSpec:
    """Data already migrated to the current ``schema_version`` → a spec, or SpecProblems."""
    dated = list(_dates(data, ()))
    if dated:
        raise SpecProblems(
            [f"{'.'.join(p) or '(top level)'} = {v}: dates and times are not allowed in a "
             f"preset" for p, v in dated]
        )
    try:
        return _adapter().validate_json(json.dumps(data))
    except ValidationError as exc:
        raise SpecProblems(validation_problems(exc)) from exc


def _dates(node: Any, path: tuple[str, ...]) -> Any:
    if isinstance(node, (datetime, date, time)):
        yield path, node.isoformat()
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _dates(v, (*path, str(k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _dates(v, (*path, str(i)))


def validation_problems(exc: ValidationError) -> list[str]:
    # A misspelt key also shows up as a missing one; the unknown key (with its
    # "did you mean") explains both, so it goes first.
    errors = sorted(exc.errors(), key=lambda e: e["type"] not in _UNKNOWN_KEY)
    return [_describe(err) for err in errors]


def _describe(err: Any) -> str:
    loc = tuple(str(p) for p in err["loc"])
    path = ".".join(loc) or "(top level)"
    kind = err["type"]
    msg = str(err["msg"]).replace("Input should be", "should be")
    if kind in _UNKNOWN_KEY:
        allowed = allowed_keys(loc[:-1])
        close = _close(loc[-1], allowed)
        hint = f"did you mean {'.'.join((*loc[:-1], close))}?" if close else (
            f"allowed here: {', '.join(allowed)}" if allowed else "remove it"
        )
        return f"unknown key {path} ({hint})"
    if kind == "missing":
        return f"missing required field {path}"
    if kind == "value_error":
        return f"{path}: {msg.removeprefix('Value error, ')}"
    if kind in ("dataclass_type", "dict_type"):
        # pydantic words these in JSON's terms ("an object"); the file is TOML
        return f"{path} = {_short(err.get('input'))}: should be a table ([{path}])"
    return f"{path} = {_short(err.get('input'))}: {msg}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _close(word: str, options: list[str]) -> str | None:
    close = difflib.get_close_matches(word, options, n=1)
    return close[0] if close else None


def allowed_keys(loc: tuple[str, ...]) -> list[str]:
    """The keys the schema allows in the table at ``loc`` (``()`` = top level)."""
    cls: Any = PresetSpec
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        if not is_section(cls):
            return []
        ann = field_types(cls).get(part)
        if ann is None:
            return []
        if is_section(ann):
            cls = ann
        elif get_args(ann) and parts:  # dict[str, Plan]: skip the key
            parts.pop(0)
            cls = get_args(ann)[-1]
        else:
            return []
    return list(field_types(cls)) if is_section(cls) else []
