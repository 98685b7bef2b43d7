"""``--set section.key=value`` overrides, type-checked against the preset schema."""

from __future__ import annotations

import difflib
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ds_wizard.core.base.errors import PresetError
from ds_wizard.core.base.limits import (
    MAX_WORLD_SIZE,
    check_bracket_depth,
    check_number_spellings,
    parse_int,
)
from ds_wizard.core.presets.lookup import Preset, load_preset
from ds_wizard.core.presets.schema import PresetSpec, field_types, is_section

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PINNED_PREFIX = "batch.by_world_size."


def _leaf_paths(cls: type, prefix: str = "") -> list[str]:
    paths = []
    for name, ann in field_types(cls).items():
        if is_section(ann):
            paths += _leaf_paths(ann, f"{prefix}{name}.")
        else:
            paths.append(f"{prefix}{name}")
    return paths


# schema_version describes the file, not the recipe; it is never set by hand.
SETTABLE = [p for p in _leaf_paths(PresetSpec) if p != "schema_version"]


def parse_value(raw: str, what: str = "--set value") -> Any:
    """A TOML value (``48``, ``3e-4``, ``true``, ``"bf16"``, ``[0.9, 0.95]``).

    Bare words that are not TOML (``bf16``) are taken as strings; the schema then decides
    whether a string is allowed there, so ``n_layer=4x`` still fails as "not an integer".
    A value nested or sized past :mod:`ds_wizard.core.base.limits` is refused before the TOML
    parser (which recurses, and int()s any digit string) sees it.
    """
    check_bracket_depth(raw, what)
    check_number_spellings(raw, what)
    if "\n" in raw or "\r" in raw:
        raise PresetError(f"{what} holds a line break",
                          "a --set value is one line; write \\n inside a quoted string")
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw
    except ValueError as exc:  # a digit string past int()'s limit
        raise PresetError(f"{what}: the number has too many digits",
                          "no preset field takes a number that long") from exc


def _unknown_key(path: str) -> PresetError:
    close = difflib.get_close_matches(path, SETTABLE, n=1)
    if not close:  # `--set n_layer=48`: the section was left out
        close = [p for p in SETTABLE if p.rsplit(".", 1)[-1] == path.rsplit(".", 1)[-1]][:1]
    section = path.split(".", 1)[0]
    in_section = [p for p in SETTABLE if p.startswith(section + ".")]
    if close:
        hint = f"did you mean {close[0]}?"
    elif in_section:
        hint = "keys there: " + ", ".join(p.split(".", 1)[1] for p in in_section)
    else:
        hint = "sections: model, train, batch, deepspeed; see `ds-wizard presets show NAME`"
    return PresetError(f"--set: unknown key {path!r}", hint)


def apply_overrides(spec: PresetSpec, assignments: list[str] | tuple[str, ...]) -> PresetSpec:
    """Return a new, re-validated spec with each ``path=value`` applied in order."""
    if not assignments:
        return spec
    data = spec.to_dict()
    for item in assignments:
        if "=" not in item:
            raise PresetError(
                f"--set {item!r} is not key=value", "write it like --set train.lr=3e-4"
            )
        path, raw = (part.strip() for part in item.split("=", 1))
        pinned = path.startswith(PINNED_PREFIX) and len(path.split(".")) in (3, 4)
        if pinned:
            size = path.split(".")[2]
            if size != str(parse_int(size, "--set batch.by_world_size key",
                                     high=MAX_WORLD_SIZE)):
                raise PresetError(f"--set {path}: write the GPU count as plain digits",
                                  "e.g. --set batch.by_world_size.8.micro_batch=2")
        if path not in SETTABLE and not pinned:
            raise _unknown_key(path)
        node = data
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise _unknown_key(path)
        node[leaf] = parse_value(raw, f"--set {path}")
    from ds_wizard.core.presets.validation import SpecProblems, validate_spec

    try:
        return validate_spec(data)
    except SpecProblems as exc:
        raise PresetError(f"--set: {exc}") from exc


def load_with_overrides(preset: str | Preset, sets: Sequence[str] = ()) -> Preset:
    """A preset (by name/path, or already loaded) with ``--set`` overrides applied.

    The CLI, the launcher and the training entry point all resolve presets through this,
    so an override means the same thing everywhere.
    """
    loaded = preset if isinstance(preset, Preset) else load_preset(str(preset))
    if sets:
        loaded = replace(loaded, spec=apply_overrides(loaded.spec, list(sets)))
    return loaded


def with_batch(spec: PresetSpec, world_size: int, micro: int, gas: int) -> PresetSpec:
    """``spec`` with ``micro × gas × world_size`` as its batch, re-validated.

    A preset that pins a plan for this world size gets that pin replaced; otherwise its
    base batch changes, so other world sizes derive from the new target as usual.
    """
    prefix = "batch."
    if str(world_size) in spec.batch.by_world_size:
        prefix = f"{PINNED_PREFIX}{world_size}."
    return apply_overrides(spec, [f"{prefix}micro_batch={micro}",
                                  f"{prefix}global_batch={micro * gas * world_size}"])
