"""Facts about this machine, from psutil: is a process alive, how much memory is free, which
disk holds a path and how full it is.

Each question has one answer here so every caller agrees (a zombie is dead for all of them),
and a probe that psutil cannot answer raises :class:`SystemFactError`, the one-line
``DsWizardError``, never psutil's own exception. Callers that only describe something else
(a full disk named inside another error) decide for themselves what an unknown fact means.

psutil is imported inside each function: it costs ~40 ms, and the start-up of commands such
as ``check`` never needs it (benchmarks/startup.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ds_wizard.core.base.errors import DsWizardError


class SystemFactError(DsWizardError):
    """psutil could not read a fact about this machine (no /proc, a path nobody may read)."""


def _failed(what: str, err: BaseException) -> SystemFactError:
    reason = " ".join(str(err).split()) or type(err).__name__
    return SystemFactError(f"cannot read {what}: {reason}",
                           "check that /proc is mounted and readable by this user")


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` exists and is not a zombie.

    A zombie has finished and only waits for its parent to read its exit status: nothing
    it does can still affect a run, so it counts as dead. A process we may not inspect
    (another user's) exists, so it counts as alive.
    """
    if pid <= 0:  # 0 and negatives name process groups, never one process
        return False
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # also psutil.ZombieProcess, where the OS reports so
        return False
    except psutil.AccessDenied:
        return True


def available_memory() -> int:
    """Bytes that can be allocated without swapping (the kernel's MemAvailable)."""
    import psutil

    try:
        return int(psutil.virtual_memory().available)
    except (psutil.Error, OSError, RuntimeError) as err:
        raise _failed("this machine's available memory", err) from err


@dataclass(frozen=True)
class Disk:
    """The filesystem holding a path: where it is mounted, its type, its space in bytes."""

    mount: str
    fstype: str  # "?" when no mount entry covers the path
    free: int
    total: int


def _existing(path: str | Path) -> Path:
    # a path about to be created is judged by the nearest directory that exists
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p.resolve()


def mount_of(path: str | Path) -> tuple[str, str]:
    """The mount point holding ``path`` and its filesystem type ("?" when unknown)."""
    p = _existing(path)
    import psutil

    try:
        parts = psutil.disk_partitions(all=True)
    except (psutil.Error, OSError, RuntimeError) as err:
        raise _failed("the mounted filesystems", err) from err
    best: tuple[str, str] = ("/", "?")
    for part in parts:
        mp = Path(part.mountpoint)
        # the longest mount point above the path holds it; of several mounts on one point
        # the last listed is the visible one, hence >=
        if (mp == p or mp in p.parents) and len(part.mountpoint) >= len(best[0]):
            best = (part.mountpoint, part.fstype or "?")
    return best


def disk_of(path: str | Path) -> Disk:
    """The filesystem holding ``path`` (or the directory it would be created in)."""
    mount, fstype = mount_of(path)
    import psutil

    try:
        usage = psutil.disk_usage(str(_existing(path)))
    except (psutil.Error, OSError) as err:
        raise _failed(f"the disk space at {mount}", err) from err
    return Disk(mount, fstype, int(usage.free), int(usage.total))
