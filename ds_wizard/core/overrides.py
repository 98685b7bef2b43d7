"""``--set section.key=value`` overrides, type-checked against the preset schema."""

from __future__ import annotations

import difflib
import sys
from typing import Any

from pydantic import BaseModel, ValidationError

from ds_wizard.core.errors import PresetError
from ds_wizard.core.schema import PresetSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _leaf_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            paths += _leaf_paths(ann, f"{prefix}{name}.")
        else:
            paths.append(f"{prefix}{name}")
    return paths


SETTABLE = [p for p in _leaf_paths(PresetSpec) if p != "schema_version"]


def parse_value(raw: str) -> Any:
    """A TOML value (``48``, ``3e-4``, ``true``, ``"bf16"``, ``[0.9, 0.95]``).

    Bare words that are not TOML (``bf16``) are taken as strings.
    """
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_overrides(spec: PresetSpec, assignments: list[str] | tuple[str, ...]) -> PresetSpec:
    """Return a new, re-validated spec with each ``path=value`` applied in order."""
    if not assignments:
        return spec
    data = spec.model_dump()
    for item in assignments:
        if "=" not in item:
            raise PresetError(
                f"--set {item!r} is not key=value", "write it like --set train.lr=3e-4"
            )
        path, raw = (part.strip() for part in item.split("=", 1))
        if path not in SETTABLE and not path.startswith("batch.by_world_size."):
            close = difflib.get_close_matches(path, SETTABLE, n=1)
            hint = f"did you mean {close[0]}?" if close else "see `ds-wizard presets show NAME`"
            raise PresetError(f"--set: unknown key {path!r}", hint)
        node = data
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = parse_value(raw)
    try:
        return PresetSpec.model_validate(data)
    except ValidationError as exc:
        from ds_wizard.core.presets import format_validation_error

        raise PresetError(f"--set: {format_validation_error(exc)}") from exc
