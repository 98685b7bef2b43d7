"""Finding, reading and validating preset files.

Lookup order for a name (first match wins): an explicit path; ``./presets/`` in the
current directory; each directory of ``DS_WIZARD_PRESET_PATH`` (colon-separated, for a
team's shared directory); the user's config directory; the presets shipped with ds-wizard.

A preset file is TOML data only: it is parsed with ``tomllib`` and validated by the
schema (``core/presets/schema.py``); nothing in it is evaluated. Files are size-limited
and names sanitized.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ds_wizard.core.base.errors import PresetError
from ds_wizard.core.base.fsio import read_text
from ds_wizard.core.base.limits import LimitError, check_number_spellings
from ds_wizard.core.presets import spec_cache
from ds_wizard.core.presets.migrations import migrate
from ds_wizard.core.presets.schema import PresetSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESET_SUFFIX = ".toml"
# The source document's recipe: what `--auto`, `generate` and the wizard start from.
DEFAULT_PRESET = "7b_mamba"
MAX_PRESET_BYTES = 64 * 1024
ENV_PRESET_PATH = "DS_WIZARD_PRESET_PATH"
# Points the user config dir elsewhere (tests, or a per-project sandbox).
ENV_CONFIG_DIR = "DS_WIZARD_CONFIG_DIR"
SOURCES = ("path", "local", "team", "user", "builtin")

MAX_NAME_LEN = 64
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Preset:
    """A validated preset and where it came from."""

    name: str
    spec: PresetSpec
    source: str  # one of SOURCES
    path: Path | None
    # one line each, e.g. "migrated from schema_version 1"; the CLI prints them on stderr
    notices: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class PresetDir:
    source: str
    path: Path


class PresetValidationError(PresetError):
    """A schema violation; ``problems`` has every one, the message the first."""

    def __init__(self, message: str, problems: list[str], hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.problems = problems


# ---------------------------------------------------------------------------- names


def check_name(name: str) -> str:
    """A preset name is a plain file stem: it can never reach outside its directory."""
    why = None
    if not name:
        why = "it is empty"
    elif "/" in name or "\\" in name or os.sep in name:
        why = "it contains a path separator"
    elif ".." in name:
        why = "it contains '..'"
    elif name.startswith("."):
        why = "it starts with a dot (hidden file)"
    elif name.lower().endswith(PRESET_SUFFIX):
        why = f"it ends with {PRESET_SUFFIX}; give the name without it"
    elif len(name) > MAX_NAME_LEN:
        why = f"it is longer than {MAX_NAME_LEN} characters"
    elif not _NAME_RE.fullmatch(name):
        why = "only letters, digits, '.', '_' and '-' are allowed, starting with a letter or digit"
    if why:
        raise PresetError(
            f"invalid preset name {name[:80]!r}: {why}", "use a name like my_mamba_1.4b"
        )
    return name


# ----------------------------------------------------------------------- directories


def builtin_dir() -> Path:
    """The shipped presets: inside the wheel, or ``presets/`` of a source checkout."""
    packaged = Path(__file__).resolve().parents[2] / "_builtin_presets"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "presets"


def user_dir() -> Path:
    """Where ``import``, ``new`` and the TUI save presets (created on first write)."""
    override = os.environ.get(ENV_CONFIG_DIR, "").strip()
    if override:
        return Path(override).expanduser() / "presets"
    from platformdirs import user_config_path

    return user_config_path("ds-wizard") / "presets"


def search_dirs(cwd: Path | None = None) -> list[PresetDir]:
    """The directories a name is looked up in, most specific first."""
    cwd = cwd or Path.cwd()
    dirs = [PresetDir("local", cwd / "presets")]
    for entry in os.environ.get(ENV_PRESET_PATH, "").split(os.pathsep):
        if entry.strip():
            p = Path(entry.strip()).expanduser()
            dirs.append(PresetDir("team", p if p.is_absolute() else cwd / p))
    dirs.append(PresetDir("user", user_dir()))
    dirs.append(PresetDir("builtin", builtin_dir()))
    # The same directory reached twice (running inside the repo: ./presets is the
    # built-in dir) counts once, under its first, more specific source.
    seen: set[Path] = set()
    unique = []
    for d in dirs:
        key = _identity(d.path)
        if key not in seen:
            seen.add(key)
            unique.append(d)
    return unique


def _identity(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:  # a symlink loop: keep the literal path as its identity
        return path


# --------------------------------------------------------------------------- parsing


def looks_like_path(ref: str) -> bool:
    return (
        "/" in ref
        or os.sep in ref
        or ref.endswith(PRESET_SUFFIX)
        or ref.startswith((".", "~"))
    )


_TOML_POS = re.compile(r"^(?P<msg>.*?) \(at line (?P<line>\d+), column (?P<col>\d+)\)$")


@dataclass(frozen=True)
class Parsed:
    spec: PresetSpec
    notices: tuple[str, ...]


def _check_value_numbers(text: str, origin: str) -> None:
    """The number rules of ``--set`` (core/base/limits.py) for every ``key = value`` line
    of a preset: no 0x/0o/0b/_ spellings, no digit runs past the limit."""
    for lineno, line in enumerate(text.splitlines(), 1):
        key, eq, value = line.partition("=")
        if eq and not key.lstrip().startswith(("#", "[")):
            try:
                check_number_spellings(value.split(" #")[0], f"{origin} line {lineno}")
            except LimitError as exc:
                raise PresetError(exc.message, exc.hint) from None


def parse_preset(text: str, origin: str) -> Parsed:
    """TOML text → migrated, validated spec plus notices.

    Syntax errors name the origin, line and column; schema errors the field path, the bad
    value and what is allowed. Text that passed before is rebuilt from the validation
    cache instead (see :mod:`ds_wizard.core.presets.spec_cache`).
    """
    cached = spec_cache.get(text, origin)
    if cached is not None:
        return Parsed(*cached)
    _check_value_numbers(text, origin)
    try:
        data = tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = _TOML_POS.match(msg)
        where = f"line {m['line']}, column {m['col']}: {m['msg']}" if m else msg
        raise PresetError(
            f"{origin}: invalid TOML at {where}", "fix the syntax there; presets are TOML"
        ) from exc
    except RecursionError as exc:
        raise PresetError(f"{origin}: invalid TOML: nested too deeply") from exc
    except ValueError as exc:  # an integer literal past int()'s digit limit
        raise PresetError(f"{origin}: a number has too many digits",
                          "no preset field takes a number that long") from exc
    parsed = validate_data(data, origin)
    spec_cache.put(text, origin, parsed.spec, parsed.notices)
    return parsed


def validate_data(data: dict[str, Any], origin: str) -> Parsed:
    data, notices = migrate(data, origin)
    # pydantic is imported only here, when data really has to be checked
    from ds_wizard.core.presets.validation import SpecProblems, validate_spec

    try:
        spec = validate_spec(data)
    except SpecProblems as exc:
        raise PresetValidationError(f"{origin}: {exc}", exc.problems) from exc
    return Parsed(spec, tuple(notices))


def _close(word: str, options: list[str]) -> str | None:
    import difflib

    close = difflib.get_close_matches(word, options, n=1)
    return close[0] if close else None


# ----------------------------------------------------------------------------- files


def read_preset_text(path: Path) -> str:
    """The text of a preset file, refusing anything that is not a small regular file."""
    try:
        path.lstat()
    except ValueError as exc:  # an embedded NUL byte
        raise PresetError(f"invalid preset path {str(path)!r}") from exc
    except FileNotFoundError as exc:
        raise PresetError(f"preset file {path} does not exist") from exc
    except OSError:
        pass  # the one reader below says what is wrong
    return read_text(path, limit=MAX_PRESET_BYTES, what=".toml preset file",
                     error=PresetError)


def read_preset_file(path: Path, name: str | None = None, source: str = "path") -> Preset:
    """Read, migrate and validate one file (the TUI's "load from a path")."""
    path = Path(path)
    parsed = parse_preset(read_preset_text(path), str(path))
    return Preset(name or path.stem, parsed.spec, source, path, parsed.notices)


def candidates(name: str, cwd: Path | None = None) -> list[tuple[str, Path]]:
    """Every (source, file) a name could resolve to, in lookup order (not validated)."""
    found = []
    for d in search_dirs(cwd):
        p = d.path / f"{name}{PRESET_SUFFIX}"
        if p.is_file():
            found.append((d.source, p))
    return found


def load_preset(ref: str, cwd: Path | None = None) -> Preset:
    """Resolve a preset by path or name, migrate and validate it.

    The first file found wins even when it is invalid: silently falling through to a
    preset further down the path would train something other than what was asked for.
    """
    if "\x00" in ref:
        raise PresetError(f"invalid preset reference {ref!r}: it contains a NUL byte")
    if looks_like_path(ref):
        path = Path(ref).expanduser()
        if cwd is not None and not path.is_absolute():
            path = cwd / path
        if not path.exists() and "/" not in ref and ref.endswith(PRESET_SUFFIX):
            stem = ref[: -len(PRESET_SUFFIX)]
            raise PresetError(
                f"preset file {ref} does not exist", f"for a named preset write {stem!r}"
            )
        return read_preset_file(path)
    check_name(ref)
    found = candidates(ref, cwd)
    if not found:
        names = sorted({e.name for e in list_presets(cwd)})
        close = _close(ref, names)
        raise PresetError(
            f"unknown preset {ref!r}",
            f"did you mean {close!r}?" if close
            else f"available: {', '.join(names)}; or give a path to a .toml file",
        )
    source, path = found[0]
    return read_preset_file(path, ref, source)


@dataclass(frozen=True)
class PresetEntry:
    """One name on the lookup path, for listings."""

    name: str
    source: str
    path: Path
    shadows: tuple[str, ...]  # sources of the same name further down the path
    shadowed_paths: tuple[Path, ...] = ()


def list_presets(cwd: Path | None = None) -> list[PresetEntry]:
    """Every preset name on the lookup path, sorted, with what it shadows.

    Files are not validated here (see ``preset_report.summarize`` for that). Hidden files
    are skipped; an unreadable directory (a dead team mount) counts as empty.
    """
    by_name: dict[str, list[tuple[str, Path]]] = {}
    for d in search_dirs(cwd):
        try:
            files = sorted(d.path.glob(f"*{PRESET_SUFFIX}")) if d.path.is_dir() else []
        except OSError:
            files = []
        for p in files:
            if p.name.startswith(".") or not p.is_file():
                continue
            by_name.setdefault(p.stem, []).append((d.source, p))
    entries = []
    for name in sorted(by_name):
        (source, path), *rest = by_name[name]
        entries.append(
            PresetEntry(
                name, source, path, tuple(s for s, _ in rest), tuple(p for _, p in rest)
            )
        )
    return entries

