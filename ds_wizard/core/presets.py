"""Finding, reading and validating preset files.

Lookup order for a name (first match wins): an explicit path; ``./presets/`` in the
current directory; each directory of ``DS_WIZARD_PRESET_PATH`` (colon-separated, for a
team's shared directory); the user's config directory; the presets shipped with ds-wizard.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from ds_wizard.core.errors import PresetError
from ds_wizard.core.schema import SCHEMA_VERSION, PresetSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESET_SUFFIX = ".toml"
MAX_PRESET_BYTES = 64 * 1024
ENV_PRESET_PATH = "DS_WIZARD_PRESET_PATH"


@dataclass(frozen=True)
class Preset:
    """A validated preset and where it came from."""

    name: str
    spec: PresetSpec
    source: str  # "path" | "local" | "team" | "user" | "builtin"
    path: Path | None


@dataclass(frozen=True)
class PresetDir:
    source: str
    path: Path


def builtin_dir() -> Path:
    """The shipped presets: inside the wheel, or ``presets/`` of a source checkout."""
    packaged = Path(__file__).resolve().parent.parent / "_builtin_presets"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "presets"


def user_dir() -> Path:
    from platformdirs import user_config_path

    return user_config_path("ds-wizard") / "presets"


def search_dirs(cwd: Path | None = None) -> list[PresetDir]:
    cwd = cwd or Path.cwd()
    dirs = [PresetDir("local", cwd / "presets")]
    for entry in os.environ.get(ENV_PRESET_PATH, "").split(os.pathsep):
        if entry.strip():
            dirs.append(PresetDir("team", Path(entry).expanduser()))
    dirs.append(PresetDir("user", user_dir()))
    dirs.append(PresetDir("builtin", builtin_dir()))
    # The same directory reached twice (running inside the repo: ./presets is the
    # built-in dir) counts once, under its first, more specific source.
    seen: set[Path] = set()
    unique = []
    for d in dirs:
        key = d.path.resolve() if d.path.exists() else d.path
        if key not in seen:
            seen.add(key)
            unique.append(d)
    return unique


def looks_like_path(ref: str) -> bool:
    return os.sep in ref or ref.endswith(PRESET_SUFFIX) or ref.startswith(".")


def parse_preset_text(text: str, origin: str) -> PresetSpec:
    """TOML text → validated spec. Errors name the file, and the line/column or field."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PresetError(f"{origin}: invalid TOML: {exc}", "fix the syntax at that line") from exc
    return validate_preset_data(data, origin)


def validate_preset_data(data: dict, origin: str) -> PresetSpec:
    version = data.get("schema_version", SCHEMA_VERSION)
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise PresetError(
            f"{origin}: schema_version {version} is newer than this ds-wizard understands "
            f"(up to {SCHEMA_VERSION})",
            "upgrade ds-wizard",
        )
    try:
        return PresetSpec.model_validate(data)
    except ValidationError as exc:
        raise PresetError(f"{origin}: {format_validation_error(exc)}") from exc


def format_validation_error(exc: ValidationError) -> str:
    """First problem as ``field.path = value: what is allowed`` (+N more)."""
    errors = exc.errors()
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        text = f"unknown key {loc}"
    elif first["type"] == "missing":
        text = f"missing required field {loc}"
    else:
        text = f"{loc} = {first.get('input')!r}: {msg}"
    if len(errors) > 1:
        text += f" (+{len(errors) - 1} more)"
    return text


def read_preset_file(path: Path, name: str | None = None, source: str = "path") -> Preset:
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise PresetError(f"preset file {path} does not exist") from exc
    except OSError as exc:
        raise PresetError(f"cannot read preset file {path}: {exc.strerror}") from exc
    if path.is_dir():
        raise PresetError(f"{path} is a directory, not a preset file")
    if size > MAX_PRESET_BYTES:
        raise PresetError(
            f"{path}: {size} bytes is over the {MAX_PRESET_BYTES} byte limit for presets",
            "a preset is a short TOML file; is this the right file?",
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PresetError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    except OSError as exc:
        raise PresetError(f"cannot read preset file {path}: {exc.strerror}") from exc
    spec = parse_preset_text(text, str(path))
    return Preset(name or path.stem, spec, source, path)


def candidates(name: str, cwd: Path | None = None) -> list[Preset]:
    """Every file that a name could resolve to, in lookup order (not yet validated)."""
    found = []
    for d in search_dirs(cwd):
        p = d.path / f"{name}{PRESET_SUFFIX}"
        if p.is_file():
            found.append(Preset(name, None, d.source, p))  # type: ignore[arg-type]
    return found


def load_preset(ref: str, cwd: Path | None = None) -> Preset:
    """Resolve a preset by path or name and validate it."""
    if looks_like_path(ref):
        path = Path(ref).expanduser()
        if path.exists() or os.sep in ref:
            return read_preset_file(path)
    found = candidates(ref, cwd)
    if not found:
        names = sorted({p.name for p in list_presets(cwd)})
        hint = _suggest(ref, names)
        raise PresetError(
            f"unknown preset {ref!r}",
            hint or f"available: {', '.join(names)}; or give a path to a .toml file",
        )
    first = found[0]
    return read_preset_file(first.path, ref, first.source)  # type: ignore[arg-type]


def _suggest(word: str, options: list[str]) -> str | None:
    import difflib

    close = difflib.get_close_matches(word, options, n=1)
    return f"did you mean {close[0]!r}?" if close else None


@dataclass(frozen=True)
class PresetEntry:
    """One file on the lookup path, for listings."""

    name: str
    source: str
    path: Path
    shadows: tuple[str, ...]  # sources of the same name further down the path


def list_presets(cwd: Path | None = None) -> list[PresetEntry]:
    by_name: dict[str, list[PresetDir | tuple]] = {}
    order: list[str] = []
    for d in search_dirs(cwd):
        if not d.path.is_dir():
            continue
        for p in sorted(d.path.glob(f"*{PRESET_SUFFIX}")):
            if p.name.startswith("."):
                continue
            if p.stem not in by_name:
                by_name[p.stem] = []
                order.append(p.stem)
            by_name[p.stem].append((d.source, p))
    entries = []
    for name in sorted(order):
        hits = by_name[name]
        source, path = hits[0]
        entries.append(PresetEntry(name, source, path, tuple(s for s, _ in hits[1:])))
    return entries
