"""File reads and writes that never hang, never lose data and never replace what they should not.

Reads (:func:`read_input`): only regular files, opened without blocking (a FIFO is refused
at once, not waited on) and read with a size cap (``/dev/zero`` is refused, not read until
memory runs out).

Writes (:func:`atomic_write_text`, :func:`write_if_changed`, :func:`write_all`,
:func:`create_new_text`):

- The output path must be a regular file or not exist. A device node, FIFO, socket,
  directory or ``/proc/self/fd/N`` is refused with one line and never read (not even to
  make a backup).
- A symlink is followed: the file it points to is written and the link stays a link.
- The new content goes to a temp file in the same directory, which gets the original's
  mode and owner, and is renamed over the target, so a crash or a full disk leaves the old
  file or the new one, never half of one.
- A file with other hard links, or one whose owner this process cannot give a new file
  (a non-root user writing someone else's group-writable file), cannot be replaced by a
  rename without breaking the link or changing the owner. It is rewritten in place
  instead, after its old content is saved to ``NAME.bak`` (always, so a crash in the middle
  can be undone by hand).
- Temp files are named ``.NAME.ds-wizard-PID-XXXX.tmp``. One left by a killed process is
  removed by the next write to the same directory: its process is gone and it is older
  than the writer.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ds_wizard.core.base.errors import DsWizardError, WriteError
from ds_wizard.core.base.system import pid_alive

BACKUP_SUFFIX = ".bak"
TEMP_MARK = ".ds-wizard-"
_TEMP_RE = re.compile(r"\..*\.ds-wizard-(\d+)-[A-Za-z0-9_]+\.tmp", re.DOTALL)
# when this process started writing, near enough: temp files older than this and whose
# process is gone cannot be a write in progress
_STARTED = time.time()
_CHUNK = 1 << 16


class InputError(DsWizardError):
    """An input path that is missing, not a regular file, too large or unreadable."""


class AlreadyExists(WriteError):
    """:func:`create_new_text` found something at the path already."""


@dataclass(frozen=True)
class FileChange:
    """What one write did: ``changed`` false means the file already held the text."""

    path: Path
    changed: bool
    created: bool = False
    backup: Path | None = None


# ----------------------------------------------------------------------------- reading


def kind_of(mode: int) -> str:
    """``st_mode`` → words for a message ("a FIFO (named pipe)")."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "not a regular file"


def read_input(path: str | os.PathLike[str], *, limit: int, what: str = "input file",
               error: type[DsWizardError] = InputError) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, or one-line ``error``.

    The file is checked with ``stat`` before it is opened (opening some devices has side
    effects), opened non-blocking (a FIFO swapped in meanwhile does not hang) and checked
    again on the open descriptor; at most ``limit + 1`` bytes are ever read, so a file that
    lies about its size (``/proc``, a growing log) still cannot exhaust memory.
    """
    p = Path(path)
    too_big = error(f"{p}: larger than the {_size(limit)} limit for a {what}",
                    "is this the right file?")
    fd = _open_regular(p, what, error)
    try:
        st = os.fstat(fd)
        _require_regular(p, st.st_mode, what, error)
        if st.st_size > limit:
            raise too_big
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(_CHUNK, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise error(f"cannot read {p}: {exc.strerror or exc}",
                    "check the file and its disk") from exc
    finally:
        os.close(fd)
    if total > limit:
        raise too_big
    return b"".join(chunks)


def _open_regular(p: Path, what: str, error: type[DsWizardError]) -> int:
    """A descriptor of the regular file ``p``, opened without blocking, or one-line ``error``
    (missing, a FIFO or device, a symlink loop, a path with a NUL byte, no permission)."""
    try:
        _require_regular(p, os.stat(p).st_mode, what, error)
        return os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise error(f"{p}: no such file", "check the path") from exc
    except ValueError as exc:  # an embedded NUL byte
        raise error(f"invalid path {str(p)!r}", "check the path") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise error(f"cannot read {p}: a loop of symbolic links",
                        "point the link at a real file") from exc
        if exc.errno == errno.ENAMETOOLONG:
            raise error(f"cannot read {str(p)[:80]}...: the path is too long",
                        "check the path") from exc
        raise error(f"cannot read {p}: {exc.strerror or exc}",
                    "check the file's permissions") from exc


def read_text(path: str | os.PathLike[str], *, limit: int, what: str = "input file",
              error: type[DsWizardError] = InputError, errors: str = "strict") -> str:
    """:func:`read_input` decoded as UTF-8; a file that is not UTF-8 is one-line ``error``
    (or, with ``errors="replace"``, read with U+FFFD for the bad bytes)."""
    raw = read_input(path, limit=limit, what=what, error=error)
    try:
        return raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start})",
                    f"give the path of a {what}") from exc


def read_tail(path: str | os.PathLike[str], *, limit: int, what: str = "log file",
              error: type[DsWizardError] = InputError) -> tuple[bytes, bool]:
    """The last ``limit`` bytes of a regular file (all of it when smaller), and whether the
    file was longer: for the files a live process keeps appending to (train.log), where
    only the end matters and the size may grow between ``stat`` and ``read``."""
    p = Path(path)
    fd = _open_regular(p, what, error)
    try:
        st = os.fstat(fd)
        _require_regular(p, st.st_mode, what, error)
        cut = st.st_size > limit
        if cut:
            os.lseek(fd, st.st_size - limit, os.SEEK_SET)
        chunks, total = [], 0
        while total < limit:
            chunk = os.read(fd, min(_CHUNK, limit - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise error(f"cannot read {p}: {exc.strerror or exc}",
                    "check the file and its disk") from exc
    finally:
        os.close(fd)
    return b"".join(chunks), cut


def iter_input(path: str | os.PathLike[str], *, limit: int, what: str = "input file",
               error: type[DsWizardError] = InputError) -> Iterator[bytes]:
    """The bytes of a regular file in chunks, for files read once from start to end (a log
    scanned line by line); past ``limit`` bytes, one-line ``error``. Memory stays at one
    chunk whatever the file's size."""
    p = Path(path)
    fd = _open_regular(p, what, error)
    try:
        st = os.fstat(fd)
        _require_regular(p, st.st_mode, what, error)
        if st.st_size > limit:
            raise error(f"{p}: larger than the {_size(limit)} limit for a {what}",
                        "is this the right file?")
        total = 0
        while True:
            chunk = os.read(fd, _CHUNK * 16)
            if not chunk:
                return
            total += len(chunk)
            if total > limit:
                raise error(f"{p}: larger than the {_size(limit)} limit for a {what}",
                            "is this the right file?")
            yield chunk
    except OSError as exc:
        raise error(f"cannot read {p}: {exc.strerror or exc}",
                    "check the file and its disk") from exc
    finally:
        os.close(fd)


def read_stream(stream: BinaryIO, *, limit: int, what: str = "standard input",
                error: type[DsWizardError] = InputError) -> bytes:
    """At most ``limit`` bytes of an open stream (standard input), or one-line ``error``:
    a pipe has no size to check first, so the cap is on what is read."""
    chunks, total = [], 0
    try:
        while total <= limit:
            chunk = stream.read(min(_CHUNK, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise error(f"cannot read {what}: {exc.strerror or exc}", "check the input") from exc
    if total > limit:
        raise error(f"{what}: more than the {_size(limit)} limit",
                    "pass the end of the log, e.g. `tail -n 200 LOG | ds-wizard explain -`")
    return b"".join(chunks)


def _require_regular(p: Path, mode: int, what: str, error: type[DsWizardError]) -> None:
    if stat.S_ISDIR(mode):
        raise error(f"{p} is a directory", f"give the path of a {what}")
    if not stat.S_ISREG(mode):
        raise error(f"{p} is {kind_of(mode)}, not a regular file",
                    f"give the path of a {what}; ds-wizard reads only regular files")


def _size(n: int) -> str:
    if n >= 1 << 30:
        return f"{n // (1 << 30)} GiB"
    return f"{n // (1 << 20)} MiB" if n >= 1 << 20 else f"{n // 1024} KiB"


# ---------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class _Target:
    shown: Path  # as the caller named it, for messages
    real: Path  # symlinks followed: the file actually written
    st: os.stat_result | None  # None: does not exist yet

    @property
    def backup(self) -> Path:
        return self.real.with_name(self.real.name + BACKUP_SUFFIX)

    @property
    def backup_shown(self) -> Path:
        """The backup's path as the user would write it: beside the name they gave,
        unless that name is a symlink (the backup is beside the file written)."""
        if os.path.islink(self.shown):
            return self.backup
        return self.shown.with_name(self.shown.name + BACKUP_SUFFIX)


def check_output(path: str | os.PathLike[str]) -> Path:
    """Refuse an output path that is not a regular file (or absent) or whose directory is
    missing; return the path with symlinks followed. Nothing is opened or read."""
    return _target(Path(path)).real


def ensure_dir(path: str | os.PathLike[str]) -> bool:
    """An output directory, created with its parents where missing (``--out-dir configs/``
    names where the files go; it need not exist yet). True when it was created.

    ``mkdir`` is atomic: two writers creating the same directory both succeed. A path that
    is something else (a file, a device) is refused with one line, never replaced.
    """
    p = Path(path)
    if p.is_dir():
        return False
    try:
        p.mkdir(parents=True)
    except FileExistsError:
        if p.is_dir():  # created meanwhile by another writer
            return False
        st = os.stat(p) if p.exists() else None
        what = ("a dangling symbolic link" if st is None
                else "a file" if stat.S_ISREG(st.st_mode) else kind_of(st.st_mode))
        raise WriteError(f"cannot create directory {p}: it is {what}",
                         "give a directory path, or move that away first") from None
    except NotADirectoryError:
        raise WriteError(f"cannot create directory {p}: a part of its path is not a directory",
                         "check the path") from None
    except OSError as exc:
        raise WriteError(f"cannot create directory {p}: {exc.strerror or exc}",
                         "check the path and its permissions") from exc
    return True


def _target(shown: Path, follow_symlinks: bool = True) -> _Target:
    if not follow_symlinks and shown.is_symlink():
        # the link itself is replaced (a directory ds-wizard owns must not be made to
        # write elsewhere); what it points to is never opened
        if not shown.parent.is_dir():
            raise WriteError(f"cannot write {shown}: directory {shown.parent} does not exist",
                             "create it first or choose another path")
        return _Target(shown, shown, None)
    try:
        st: os.stat_result | None = os.stat(shown)  # follows links, /proc/self/fd/N too
    except FileNotFoundError:
        st = None  # absent, or a dangling symlink: its target is created
    except ValueError as exc:
        raise WriteError(f"invalid output path {str(shown)!r}", "check the path") from exc
    except OSError as exc:
        raise WriteError(f"cannot write {shown}: {exc.strerror or exc}",
                         "check the path and its permissions") from exc
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise WriteError(f"{shown} is a directory", "give a file path to write to")
        if not stat.S_ISREG(st.st_mode):
            raise WriteError(
                f"{shown} is {kind_of(st.st_mode)}, not a regular file; not written",
                "ds-wizard writes only regular files: give a file path"
                + (", or - for standard output where the command takes it"
                   if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode) else ""),
            )
    real = Path(os.path.realpath(shown))
    if st is None and real.is_symlink():
        raise WriteError(f"cannot write {shown}: a symbolic link loop",
                         "point the link at a file, or remove it")
    parent = real.parent
    if not parent.is_dir():
        raise WriteError(f"cannot write {shown}: directory {parent} does not exist",
                         "create it first or choose another path")
    return _Target(shown, real, st)


# ----------------------------------------------------------------------------- writing


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, backup: bool = False,
    follow_symlinks: bool = True,
) -> Path | None:
    """Write ``text`` to ``path`` (see the module docstring for what is kept and refused).

    With ``backup`` and an existing file, its old content is first saved to ``NAME.bak``
    next to the file written (same mode and owner), and that path is returned. With
    ``follow_symlinks=False`` a symlink at ``path`` is replaced, not written through.
    """
    target = _target(Path(path), follow_symlinks)
    return _commit(target, text.encode("utf-8"), backup=backup)


def write_if_changed(
    path: str | os.PathLike[str], text: str, *, backup: bool = False
) -> tuple[bool, Path | None]:
    """:func:`atomic_write_text`, unless ``path`` already holds exactly ``text``.

    Re-running a command that writes the same file then leaves it, and its backup, alone.
    Returns whether it wrote, and the backup path when one was made.
    """
    target = _target(Path(path))
    data = text.encode("utf-8")
    if _holds(target, data):
        return False, None
    return True, _commit(target, data, backup=backup)


def write_all(items: Sequence[tuple[str | os.PathLike[str], str]]) -> list[FileChange]:
    """Write several files as one: all of them change, or none does.

    Every target is checked and every new content staged in a temp file first; only then
    is each renamed into place. A file that already holds its text is left alone; one that
    changes keeps its old content as ``NAME.bak``. If a rename fails, the files already
    renamed are put back and the error names the file and says nothing changed.
    """
    try:
        targets = [(_target(Path(p)), text.encode("utf-8")) for p, text in items]
    except WriteError as exc:
        raise WriteError(f"{exc.message.removesuffix('; not written')}; nothing was written",
                         exc.hint) from exc
    staged: list[_Staged] = []
    try:
        for t, data in targets:
            if _holds(t, data):
                continue
            _clean_stale(t.real.parent)
            item = _Staged(t, data)
            staged.append(item)  # before staging, so a failure below discards its temps
            if not _in_place(t):
                item.new_tmp = _stage(t.real, data, t.st, t.shown)
            if t.st is not None:
                _check_backup_slot(t)
                item.bak_tmp = _stage_copy(t)
    except BaseException as exc:
        for item in staged:
            item.discard()
        if isinstance(exc, WriteError):
            raise WriteError(f"{exc.message}; nothing was written", exc.hint) from exc
        raise
    done: list[_Staged] = []
    try:
        for item in staged:
            if item.bak_tmp is not None:
                os.replace(item.bak_tmp, item.target.backup)
                item.bak_tmp = None
            if item.new_tmp is None:
                _write_in_place(item.target, item.data)
            else:
                os.replace(item.new_tmp, item.target.real)
                item.new_tmp = None
            done.append(item)
    except (OSError, WriteError) as exc:
        undone = _undo(done)
        for item in staged:
            item.discard()
        failed = staged[len(done)].target.shown
        why = exc.message if isinstance(exc, WriteError) else (exc.strerror or str(exc))
        left = ("no file was changed" if undone is None
                else f"could not restore {undone}; its previous version is in its .bak")
        raise WriteError(f"cannot write {failed}: {why}; {left}",
                         "check free space and permissions") from exc
    for item in done:
        _sync_dir(item.target.real.parent)
    changed = {item.target.real: item for item in done}
    return [
        FileChange(t.shown, t.real in changed, t.st is None and t.real in changed,
                   t.backup_shown if t.real in changed and t.st is not None else None)
        for t, _ in targets
    ]


@dataclass
class _Staged:
    target: _Target
    data: bytes
    new_tmp: Path | None = None
    bak_tmp: Path | None = None

    def discard(self) -> None:
        _discard(self.new_tmp)
        _discard(self.bak_tmp)


def create_new_text(path: str | os.PathLike[str], text: str) -> Path:
    """Create ``path`` with ``text``, atomically, only if nothing is there (race-free).

    The content is staged in a temp file and hard-linked to the name, which the kernel
    refuses when the name exists, so two processes creating the same file cannot both
    succeed. Raises :class:`AlreadyExists` if the path is taken (even by a dangling link).
    """
    shown = Path(path)
    if os.path.lexists(shown):
        raise AlreadyExists(f"{shown} already exists")
    target = _target(shown)
    tmp = _stage(target.real, text.encode("utf-8"), None, shown)
    try:
        os.link(tmp, shown, follow_symlinks=False)
    except FileExistsError as exc:
        raise AlreadyExists(f"{shown} already exists") from exc
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise WriteError(f"cannot write {shown}: {exc.strerror or exc}",
                             "check free space and permissions") from exc
        _create_exclusive(shown, text.encode("utf-8"))  # a filesystem without hard links
    finally:
        _discard(tmp)
    _sync_dir(target.real.parent)
    return shown


# a filesystem that has no hard links (some FUSE and FAT mounts) says one of these
_NO_LINKS = {errno.EPERM, errno.ENOSYS, errno.EOPNOTSUPP}


def _create_exclusive(path: Path, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except FileExistsError as exc:
        raise AlreadyExists(f"{path} already exists") from exc
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {exc.strerror or exc}",
                         "check free space and permissions") from exc
    try:
        _write_fd(fd, data)
    except OSError as exc:
        os.close(fd)
        _discard(path)
        raise WriteError(f"cannot write {path}: {exc.strerror or exc}",
                         "check free space and permissions") from exc
    os.close(fd)


# ---------------------------------------------------------------------------- internals


def _commit(target: _Target, data: bytes, *, backup: bool) -> Path | None:
    _clean_stale(target.real.parent)
    backup_path = None
    in_place = _in_place(target)
    if target.st is not None and (backup or in_place):
        _check_backup_slot(target)
        tmp = _stage_copy(target)
        _replace(tmp, target.backup, target.shown)
        backup_path = target.backup_shown
    if in_place:
        _write_in_place(target, data)
    else:
        tmp = _stage(target.real, data, target.st, target.shown)
        _replace(tmp, target.real, target.shown)
    _sync_dir(target.real.parent)
    return backup_path


def _holds(target: _Target, data: bytes) -> bool:
    if target.st is None or target.st.st_size != len(data):
        return False
    try:
        return read_input(target.real, limit=len(data), error=WriteError) == data
    except WriteError:  # unreadable: the write that follows says what is wrong
        return False


def _in_place(target: _Target) -> bool:
    """Whether a rename would lose something: another hard link, or the owner."""
    st = target.st
    if st is None:
        return False
    if st.st_nlink > 1:
        return True
    if os.geteuid() == 0:
        return False
    return st.st_uid != os.geteuid() or st.st_gid not in (os.getegid(), *os.getgroups())


def _check_backup_slot(target: _Target) -> None:
    bak = target.backup
    try:
        st = os.lstat(bak)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise WriteError(f"cannot write {bak}: {exc.strerror or exc}",
                         "check the directory's permissions") from exc
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise WriteError(f"{bak} is {kind_of(st.st_mode)}, not a regular file; nothing written",
                         "move it away: ds-wizard keeps the previous version there")


def _temp_prefix(real: Path) -> str:
    return f".{real.name[:80]}{TEMP_MARK}{os.getpid()}-"


def _stage(real: Path, data: bytes, like: os.stat_result | None, shown: Path) -> Path:
    return _stage_with(real, lambda fd: _write_fd(fd, data), like, shown)


def _stage_copy(target: _Target) -> Path:
    """A temp copy of the target's current content, for its ``.bak``."""

    def copy(out: int) -> None:
        src = os.open(target.real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(src).st_mode):  # swapped since it was checked
                raise WriteError(f"{target.shown} is no longer a regular file; not written")
            while chunk := os.read(src, _CHUNK):
                _write_all_bytes(out, chunk)
        finally:
            os.close(src)
        os.fsync(out)

    return _stage_with(target.backup, copy, target.st, target.shown)


def _stage_with(real: Path, fill: Callable[[int], None], like: os.stat_result | None,
                shown: Path) -> Path:
    try:
        fd, name = tempfile.mkstemp(prefix=_temp_prefix(real), suffix=".tmp", dir=real.parent)
    except OSError as exc:
        raise WriteError(f"cannot write {shown}: {exc.strerror or exc}",
                         "check that the directory exists and is writable") from exc
    tmp = Path(name)
    try:
        try:
            fill(fd)
            _copy_metadata(fd, like)
        finally:
            os.close(fd)
    except OSError as exc:
        _discard(tmp)
        raise WriteError(f"cannot write {shown}: {exc.strerror or exc}",
                         "check free space and permissions") from exc
    except BaseException:
        _discard(tmp)
        raise
    return tmp


def _copy_metadata(fd: int, like: os.stat_result | None) -> None:
    if like is None:
        # mkstemp creates 0600; a new config gets the usual umask-based mode
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        return
    if (like.st_uid, like.st_gid) != (os.geteuid(), os.getegid()):
        # PermissionError is only possible for the .bak (the file itself is rewritten in
        # place when its owner cannot be kept); the mode below keeps it as private
        with contextlib.suppress(PermissionError):
            os.fchown(fd, like.st_uid, like.st_gid)
    # after chown, which clears set-id bits
    os.fchmod(fd, stat.S_IMODE(like.st_mode))


def _write_fd(fd: int, data: bytes) -> None:
    _write_all_bytes(fd, data)
    os.fsync(fd)


def _write_all_bytes(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _write_in_place(target: _Target, data: bytes) -> None:
    """Rewrite the file's own inode: every hard link and the owner stay. Its old content
    is already in the .bak; on failure it is written back from there."""
    try:
        fd = os.open(target.real, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise WriteError(f"cannot write {target.shown}: {exc.strerror or exc}",
                         "check its permissions") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise WriteError(f"{target.shown} is no longer a regular file; not written")
        try:
            _write_all_bytes(fd, data)
            os.ftruncate(fd, len(data))
            os.fsync(fd)
        except OSError as exc:
            restored = _restore_from_backup(fd, target.backup)
            raise WriteError(
                f"cannot write {target.shown}: {exc.strerror or exc}; "
                + ("its previous content was put back" if restored
                   else f"its previous content is in {target.backup}"),
                "check free space and permissions",
            ) from exc
    finally:
        os.close(fd)


def _restore_from_backup(fd: int, backup: Path) -> bool:
    try:
        old = backup.read_bytes()
        os.lseek(fd, 0, os.SEEK_SET)
        _write_all_bytes(fd, old)
        os.ftruncate(fd, len(old))
        os.fsync(fd)
    except OSError:
        return False
    return True


def _replace(tmp: Path, dest: Path, shown: Path) -> None:
    try:
        os.replace(tmp, dest)
    except OSError as exc:
        _discard(tmp)
        raise WriteError(f"cannot write {shown}: {exc.strerror or exc}",
                         "check free space and permissions") from exc


def _undo(done: list[_Staged]) -> Path | None:
    """Put back files a failed :func:`write_all` already changed; the first it could not."""
    for item in reversed(done):
        t = item.target
        try:
            if t.st is None:
                os.unlink(t.real)
            elif _in_place(t):
                _write_in_place(t, t.backup.read_bytes())
            else:
                restored = _stage_copy(_Target(t.shown, t.backup, t.st))
                os.replace(restored, t.real)
        except (OSError, WriteError):
            return t.shown
    return None


def _discard(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _sync_dir(directory: Path) -> None:
    # makes the rename itself durable; some filesystems cannot fsync a directory, and the
    # file's own content is already on disk either way
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def stale_temp_files(directory: Path) -> list[Path]:
    """ds-wizard temp files in ``directory`` left by a process that is gone and older than
    this one: no write in progress can own them."""
    stale = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    for entry in entries:
        m = _TEMP_RE.fullmatch(entry.name)
        if not m:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        pid = int(m.group(1))
        if (stat.S_ISREG(st.st_mode) and st.st_mtime < _STARTED and pid != os.getpid()
                and not pid_alive(pid)):
            stale.append(Path(entry.path))
    return stale


def _clean_stale(directory: Path) -> None:
    for path in stale_temp_files(directory):
        # another writer cleaning the same directory may have got there first; a file we
        # may not delete stays, which costs nothing but disk
        with contextlib.suppress(OSError):
            os.unlink(path)


# ------------------------------------------------------------------------------ JSON


def parse_json_text(text: str | bytes, where: str, *,
                    error: type[DsWizardError] = InputError) -> object:
    """``json.loads`` whose every failure is one-line ``error``: bad syntax, bad UTF-8, and
    nesting deep enough to exhaust Python's recursion limit (a RecursionError otherwise)."""
    try:
        return json.loads(text)
    except RecursionError as exc:
        raise error(f"{where}: nested too deeply to read", "is this the right file?") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise error(f"{where}: not valid JSON ({exc})", "is this the right file?") from exc


def read_json(path: str | os.PathLike[str], *, limit: int, what: str = "JSON file",
              error: type[DsWizardError] = InputError) -> object:
    """A JSON file through :func:`read_input` (regular, size-capped) and
    :func:`parse_json_text` (every failure one line)."""
    return parse_json_text(read_input(path, limit=limit, what=what, error=error), str(path),
                           error=error)


def read_from(path: str | os.PathLike[str], offset: int, *, limit: int,
              what: str = "log file", error: type[DsWizardError] = InputError) -> bytes:
    """At most ``limit`` bytes of a regular file from ``offset`` on: for a file another
    process appends to (metrics.jsonl), read a bounded piece per poll."""
    p = Path(path)
    fd = _open_regular(p, what, error)
    try:
        _require_regular(p, os.fstat(fd).st_mode, what, error)
        os.lseek(fd, offset, os.SEEK_SET)
        chunks, total = [], 0
        while total < limit:
            chunk = os.read(fd, min(_CHUNK * 16, limit - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise error(f"cannot read {p}: {exc.strerror or exc}",
                    "check the file and its disk") from exc
    finally:
        os.close(fd)
    return b"".join(chunks)
