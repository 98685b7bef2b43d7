"""A cache of validated presets, so reading a known preset does not import pydantic.

Strict validation (:mod:`ds_wizard.core.presets.validation`) costs about 0.2 s of imports,
most of the start-up time of ``ds-wizard --auto``. A preset file rarely changes between
runs, so once its text has passed, the validated spec is stored as plain JSON and later
runs rebuild it with :meth:`PresetSpec.from_validated`.

An entry is keyed by the SHA-256 of the file text, the name it was read under (the
notices quote it), and a fingerprint of the code that decides validity: the schema,
the migrations, the validator and the ds-wizard version. Editing any of them, or the
file, misses the cache, so a stale verdict is never served. The cache is only ever an
optimisation: an unreadable, corrupt or unwritable cache means validating again, never
an error.

Location: ``$DS_WIZARD_CACHE_DIR`` or the platform's user cache directory
(``~/.cache/ds-wizard/validated`` on Linux). ``DS_WIZARD_NO_CACHE=1`` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from ds_wizard import __version__
from ds_wizard.core.base.errors import DsWizardError, WriteError
from ds_wizard.core.base.fsio import read_input, read_json
from ds_wizard.core.presets.schema import PresetSpec

ENV_CACHE_DIR = "DS_WIZARD_CACHE_DIR"
ENV_NO_CACHE = "DS_WIZARD_NO_CACHE"
ENTRY_FORMAT = 1
# Each distinct preset text adds one ~1 KiB entry; past the limit the oldest go.
MAX_ENTRIES = 512
KEEP_AFTER_PRUNE = 256
_CODE = ("presets/schema.py", "base/limits.py", "presets/migrations.py", "presets/validation.py",
         "presets/spec_cache.py")


def enabled() -> bool:
    off = os.environ.get(ENV_NO_CACHE, "").strip().lower() in ("1", "true", "yes")
    return not off and bool(fingerprint())


def cache_dir() -> Path:
    override = os.environ.get(ENV_CACHE_DIR, "").strip()
    if override:
        return Path(override).expanduser() / "validated"
    from platformdirs import user_cache_path

    return user_cache_path("ds-wizard") / "validated"


@lru_cache(maxsize=1)
def fingerprint() -> str:
    """Changes whenever the code that decides validity changes, installed or edited."""
    h = hashlib.sha256(f"{__version__}\0{ENTRY_FORMAT}\0".encode())
    here = Path(__file__).resolve().parents[1]
    try:
        for name in _CODE:
            h.update(name.encode() + b"\0" + read_input(here / name, limit=16 << 20,
                                                         what="source file"))
    except DsWizardError:
        # sources not shipped (a frozen app): no way to tell versions apart, so no cache
        return ""
    return h.hexdigest()


def entry_key(text: str, origin: str) -> str:
    h = hashlib.sha256(fingerprint().encode())
    h.update(b"\0" + origin.encode("utf-8", "surrogatepass") + b"\0")
    h.update(text.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _entry_path(key: str) -> Path:
    return cache_dir() / f"{key}.json"


def get(text: str, origin: str) -> tuple[PresetSpec, tuple[str, ...]] | None:
    """The cached (spec, notices) for this exact text and origin, or None."""
    if not enabled():
        return None
    key = entry_key(text, origin)
    try:
        entry = read_json(_entry_path(key), limit=1 << 20, what="cache entry")
    except DsWizardError:  # absent, unreadable, not a file or corrupt: validate instead
        return None
    try:
        if entry["key"] != key:
            return None
        spec = PresetSpec.from_validated(entry["spec"])
        notices = tuple(str(n) for n in entry["notices"])
    except (KeyError, TypeError, ValueError, AttributeError):
        # an entry of the wrong shape (hand-edited, truncated): treat it as a miss
        return None
    return spec, notices


def put(text: str, origin: str, spec: PresetSpec, notices: tuple[str, ...]) -> None:
    """Remember that this text validated to ``spec``. Failing to write is not an error."""
    if not enabled():
        return
    from ds_wizard.core.base.fsio import atomic_write_text

    key = entry_key(text, origin)
    entry: dict[str, Any] = {
        "key": key, "origin": origin, "spec": spec.to_dict(), "notices": list(notices),
    }
    try:
        cache_dir().mkdir(parents=True, exist_ok=True)
        atomic_write_text(_entry_path(key), json.dumps(entry, indent=1))
        _prune()
    except (OSError, WriteError):
        # read-only home, full disk: the next run validates again, which is correct
        return


def _prune() -> None:
    entries = list(cache_dir().glob("*.json"))
    if len(entries) <= MAX_ENTRIES:
        return
    entries.sort(key=lambda p: p.stat().st_mtime)
    for old in entries[: len(entries) - KEEP_AFTER_PRUNE]:
        old.unlink(missing_ok=True)

