"""Checkpoint integrity: the size and SHA-256 of every file of a checkpoint tag.

DeepSpeed loads its checkpoints with ``torch.load(weights_only=False)``: a checkpoint file
is a pickle, and a pickle runs code when it is loaded. So a tag is verified *before*
anything loads it: every file must have exactly the size and SHA-256 that the run recorded
in its completion marker when it wrote the tag, and no file may have been added. A
truncated shard (a crash, a full disk) and a replaced one (a planted ``__reduce__``) are
both refused, and resume falls back to the newest tag that verifies.

Hashing streams each file in 1 MiB chunks (constant memory). The ranks split the files of
a tag between them (``share=(rank, world)``), so the cost per rank is about the checkpoint
size divided by the number of ranks, at the speed of SHA-256 (1–2 GB/s per core with SHA
extensions) or of the disk, whichever is slower. See docs/checkpoints.md.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ds_wizard.core.base.fsio import InputError, iter_input

CHUNK = 1 << 20
ALGORITHM = "sha256"


#: bytes of one checkpoint file hashed: far above any shard of a model ds-wizard trains
MAX_CHECKPOINT_FILE_BYTES = 1 << 40


@dataclass(frozen=True)
class FileDigest:
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "sha256": self.sha256}


def file_digest(path: str | Path) -> FileDigest:
    """Size and SHA-256 of one file, read in chunks (never the whole file in memory)."""
    h = hashlib.sha256()
    size = 0
    # through the one reader: a FIFO or device in a checkpoint is refused, not waited on
    for chunk in iter_input(path, limit=MAX_CHECKPOINT_FILE_BYTES, what="checkpoint file"):
        h.update(chunk)
        size += len(chunk)
    return FileDigest(size, h.hexdigest())


def tag_files(tag_dir: str | Path, exclude: Iterable[str] = ()) -> list[str]:
    """Every entry under ``tag_dir`` as a relative POSIX path, sorted; ``exclude`` skipped.

    Directories are walked; anything else (files, links, FIFOs) is listed, so that a
    check can refuse what is not a regular file rather than open it.
    """
    root = Path(tag_dir)
    skip = set(exclude)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        for name in filenames:
            rel = (base / name).relative_to(root).as_posix()
            if rel not in skip:
                out.append(rel)
        # a link to a directory is not walked: it is listed as an entry of its own
        for name in list(dirnames):
            if (base / name).is_symlink():
                dirnames.remove(name)
                out.append((base / name).relative_to(root).as_posix())
    return sorted(out)


def share_of(names: list[str], share: tuple[int, int]) -> list[str]:
    """The names rank ``share[0]`` of ``share[1]`` handles: every world-th one."""
    rank, world = share
    return names[rank::world]


def digest_files(tag_dir: str | Path, names: Iterable[str]) -> dict[str, FileDigest]:
    root = Path(tag_dir)
    return {name: file_digest(root / name) for name in names}


def manifest(digests: Mapping[str, FileDigest]) -> dict[str, dict[str, Any]]:
    """The ``files`` object of a completion marker."""
    return {name: digests[name].to_dict() for name in sorted(digests)}


def _regular(path: Path) -> str | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "is missing"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link, not the file that was written"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    return None


def verify_tag(tag_dir: str | Path, files: Mapping[str, Any], *,
               share: tuple[int, int] = (0, 1), exclude: Iterable[str] = (),
               full: bool = True) -> list[str]:
    """What is wrong with ``tag_dir`` against the recorded ``files``; empty when intact.

    Every caller checks every file's presence, type and size (cheap); the SHA-256 of its
    share of the files only, when ``full``. Share 0 also refuses files nobody recorded.
    Each problem is one phrase naming the file.
    """
    root = Path(tag_dir)
    problems: list[str] = []
    names = sorted(files)
    for name in names:
        entry = files[name]
        if (not isinstance(entry, Mapping) or not isinstance(entry.get("size"), int)
                or not isinstance(entry.get("sha256"), str)):
            problems.append(f"{name}: the marker's record of it is malformed")
            continue
        path = root / name
        if (bad := _regular(path)) is not None:
            problems.append(f"{name} {bad}")
            continue
        size = path.stat().st_size
        if size != entry["size"]:
            problems.append(f"{name} has {size:,} bytes; {entry['size']:,} were written")
    if share[0] == 0:
        recorded = set(names)
        for extra in tag_files(root, exclude):
            if extra not in recorded:
                problems.append(f"{extra} was not written by this run")
    if full and not problems:
        for name in share_of(names, share):
            try:
                got = file_digest(root / name)
            except InputError as exc:
                problems.append(f"{name} cannot be read ({exc.one_line()})")
                continue
            if got.sha256 != files[name]["sha256"]:
                problems.append(f"{name} does not match the SHA-256 recorded when it was "
                                "written (changed since)")
    return problems
