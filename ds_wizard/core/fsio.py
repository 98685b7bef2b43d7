"""Atomic file writes: a crash or a full disk never leaves a half-written config."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ds_wizard.core.errors import WriteError


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, backup: bool = False
) -> Path | None:
    """Write ``text`` to ``path`` through a temp file in the same directory and ``os.replace``.

    With ``backup`` and an existing file, the old content is first copied to ``<name>.bak``
    (also atomically), and that path is returned.
    """
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise WriteError(f"{target} is a directory", "give a file path to write to")
    if not parent.is_dir():
        raise WriteError(
            f"cannot write {target}: directory {parent} does not exist",
            "create it first or choose another path",
        )
    backup_path = None
    if backup and target.exists():
        backup_path = target.with_name(target.name + ".bak")
        # read inside the fill, so an unreadable file becomes a WriteError
        _replace_with(backup_path, lambda fh: fh.write(target.read_bytes()))
    _replace_with(target, lambda fh: fh.write(text.encode("utf-8")), mode_from=target)
    return backup_path


def write_if_changed(
    path: str | os.PathLike[str], text: str, *, backup: bool = False
) -> tuple[bool, Path | None]:
    """:func:`atomic_write_text`, unless ``path`` already holds exactly ``text``.

    Re-running a command that writes the same file then leaves it, and its backup, alone.
    Returns whether it wrote, and the backup path when one was made.
    """
    target = Path(path)
    if _holds(target, text.encode("utf-8")):
        return False, None
    return True, atomic_write_text(target, text, backup=backup)


def _holds(target: Path, data: bytes) -> bool:
    try:
        return target.is_file() and target.read_bytes() == data
    except OSError:  # unreadable: the write that follows says what is wrong
        return False


def _replace_with(target: Path, fill: Callable[[BinaryIO], object],
                  mode_from: Path | None = None) -> None:
    parent = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise WriteError(
            f"cannot write {target}: {exc.strerror or exc}",
            "check that the directory exists and is writable",
        ) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fill(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if mode_from is not None and mode_from.exists():
            shutil.copymode(mode_from, tmp)
        else:
            # mkstemp creates 0600; a config should get the usual umask-based mode
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise WriteError(
            f"cannot write {target}: {exc.strerror or exc}",
            "check free space and permissions",
        ) from exc
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
