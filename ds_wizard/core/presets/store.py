"""Writing presets: export as TOML, import a shared file, save the user's own.

Writes go only into the user preset directory (``presets.user_dir()``), under a sanitized
name, atomically, and never over an existing preset without ``force``. Whatever is written
is parsed back and validated first, so a saved preset always loads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from ds_wizard import __version__
from ds_wizard.core.base.errors import PresetError, WriteError
from ds_wizard.core.base.fsio import AlreadyExists, atomic_write_text, create_new_text
from ds_wizard.core.base.text import escape_unprintable
from ds_wizard.core.presets.lookup import (
    PRESET_SUFFIX,
    check_name,
    list_presets,
    parse_preset,
    read_preset_text,
    user_dir,
    validate_data,
)
from ds_wizard.core.presets.schema import SCHEMA_VERSION, PresetSpec

_TOP_ORDER = ("schema_version", "description", "based_on")
_TABLES = ("model", "train", "batch", "deepspeed", "monitor")


def spec_to_data(spec: PresetSpec) -> dict[str, Any]:
    """The spec as plain TOML-ready data, every field explicit.

    Defaults are written out so that a shared file means the same thing to a later
    ds-wizard whose defaults have moved.
    """
    dumped = spec.to_dict()
    dumped["schema_version"] = SCHEMA_VERSION
    data: dict[str, Any] = {}
    for key in _TOP_ORDER:
        if key == "based_on" and not dumped[key]:
            continue
        data[key] = dumped[key]
    for table in _TABLES:
        data[table] = dumped[table]
    pinned = data["batch"].pop("by_world_size")
    if pinned:
        data["batch"]["by_world_size"] = {k: pinned[k] for k in sorted(pinned, key=int)}
    return data


def to_toml(spec: PresetSpec, header: list[str] | tuple[str, ...] = ()) -> str:
    """TOML text for a spec, with ``header`` lines as leading comments."""
    lines = "".join(f"# {line}\n" for line in header)
    # tomli_w escapes C0 in strings; C1 and bidi controls are escaped too (\\u009b), so an
    # exported preset shows no hidden text wherever it is printed
    return lines + escape_unprintable(tomli_w.dumps(spec_to_data(spec)), keep_c0=True)


def export_text(name: str, spec: PresetSpec) -> str:
    return to_toml(spec, [f"ds-wizard preset {name!r} (exported by ds-wizard {__version__})"])


def user_preset_path(name: str) -> Path:
    """Where a user preset called ``name`` lives; the name is checked first."""
    base = user_dir()
    dest = base / f"{check_name(name)}{PRESET_SUFFIX}"
    # belt and braces: check_name already makes escaping impossible
    if dest.parent != base:
        raise PresetError(f"invalid preset name {name!r}: it leaves the user preset directory")
    return dest


def _write_user_preset(name: str, text: str, *, force: bool) -> Path:
    dest = user_preset_path(name)
    parse_preset(text, str(dest))  # never write a file that would not load
    taken = PresetError(
        f"user preset {name!r} already exists ({dest})",
        "pass --force to replace it, or choose another name",
    )
    if os.path.lexists(dest) and not force:
        raise taken
    if dest.is_dir():
        raise WriteError(f"{dest} is a directory", "remove it or choose another name")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(
            f"cannot create the user preset directory {dest.parent}: {exc.strerror or exc}",
            "check permissions, or set DS_WIZARD_CONFIG_DIR",
        ) from exc
    if force:
        # a link planted in the user preset directory is replaced, never written through
        atomic_write_text(dest, text, follow_symlinks=False)
    else:
        try:  # race-free: of two imports of one name, exactly one creates it
            create_new_text(dest, text)
        except AlreadyExists as exc:
            raise taken from exc
    return dest


def save_user_preset(
    name: str, spec: PresetSpec, force: bool = False, header: tuple[str, ...] = ()
) -> Path:
    """Save ``spec`` as the user preset ``name`` (the TUI's "save as preset")."""
    return _write_user_preset(name, to_toml(spec, header), force=force)


@dataclass(frozen=True)
class Placement:
    """Where a user preset stands on the lookup path, for the notes after a save."""

    shadowed_by: str | None  # a source earlier on the path that wins for this name
    shadows: tuple[str, ...]  # sources later on the path that this one now hides


def placement(name: str, cwd: Path | None = None) -> Placement:
    entry = next((e for e in list_presets(cwd) if e.name == name), None)
    if entry is None:
        return Placement(None, ())
    if entry.source != "user":
        return Placement(entry.source, ())
    return Placement(None, entry.shadows)


@dataclass(frozen=True)
class ImportResult:
    name: str
    path: Path
    notices: tuple[str, ...]
    placement: Placement


def import_preset(source: Path, name: str | None = None, force: bool = False) -> ImportResult:
    """Validate a preset file and copy it into the user preset directory.

    A file already in the current format is copied verbatim, comments included; an older
    one is written migrated. Nothing is written when any check fails.
    """
    source = Path(source)
    name = check_name(name if name is not None else source.stem)
    text = read_preset_text(source)
    parsed = parse_preset(text, str(source))
    if parsed.notices:
        text = to_toml(parsed.spec, [f"imported from {source.name}, migrated to "
                                     f"schema_version {SCHEMA_VERSION} by ds-wizard"])
    dest = _write_user_preset(name, text, force=force)
    return ImportResult(name, dest, parsed.notices, placement(name))


def derive_spec(base: PresetSpec, based_on: str, description: str | None = None) -> PresetSpec:
    """A copy of ``base`` recording where it came from, re-validated."""
    data = base.to_dict()
    data["based_on"] = based_on
    if description is not None:
        data["description"] = description
    return validate_data(data, "the new preset").spec
