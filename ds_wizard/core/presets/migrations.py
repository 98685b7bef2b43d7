"""Turning preset data written by an older schema into the current form.

Each step takes the raw TOML data of version N and returns data of version N+1. Steps are
pure functions on dicts (nothing in a file is ever executed), applied in a chain, and each
one that runs leaves a one-line notice the CLI prints on stderr and the TUI shows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ds_wizard.core.base.errors import PresetError
from ds_wizard.core.presets.schema import SCHEMA_VERSION

Data = dict[str, Any]
Step = Callable[[Data], Data]

# A file with no ``schema_version`` predates the key being written everywhere; the only
# format that existed then is version 1.
UNVERSIONED_IS = 1


def _v1_to_v2(data: Data) -> Data:
    # v2 only adds the optional ``based_on``; a v1 file has no base to record.
    return {**data, "schema_version": 2}


# MIGRATIONS[n] turns version n into version n + 1.
MIGRATIONS: dict[int, Step] = {1: _v1_to_v2}


def file_version(data: Data, origin: str) -> int:
    """The version a file declares, checked to be one this ds-wizard can read."""
    version = data.get("schema_version", UNVERSIONED_IS)
    if not isinstance(version, int) or isinstance(version, bool):
        raise PresetError(
            f"{origin}: schema_version = {version!r}: must be an integer",
            f"write schema_version = {SCHEMA_VERSION}",
        )
    if version > SCHEMA_VERSION:
        raise PresetError(
            f"{origin}: schema_version {version} is newer than this ds-wizard understands "
            f"(it reads versions 1 to {SCHEMA_VERSION})",
            "upgrade ds-wizard (pip install -U ds-wizard), or ask the author for an older export",
        )
    if version < 1:
        raise PresetError(
            f"{origin}: schema_version = {version}: versions start at 1",
            f"write schema_version = {SCHEMA_VERSION}",
        )
    return version


def migrate(data: Data, origin: str) -> tuple[Data, list[str]]:
    """Bring ``data`` up to ``SCHEMA_VERSION``. Returns the new data and the notices."""
    notices: list[str] = []
    declared = "schema_version" in data
    version = file_version(data, origin)
    if version == SCHEMA_VERSION:
        if not declared:
            notices.append(
                f"{origin}: no schema_version; read as version {SCHEMA_VERSION} "
                f"(add schema_version = {SCHEMA_VERSION} to the file)"
            )
        return data, notices
    start = version
    data = dict(data)
    while version < SCHEMA_VERSION:
        data = MIGRATIONS[version](data)
        version += 1
    how = f"schema_version {start}" if declared else "no schema_version (version 1)"
    notices.append(
        f"{origin}: migrated from {how} to {SCHEMA_VERSION} on load "
        f"(`ds-wizard presets export` writes it in the new format)"
    )
    return data, notices
