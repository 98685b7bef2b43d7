"""core.fsio: every write lands whole or not at all, keeps the file's mode and leaves no
temp files behind."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from ds_wizard.core.base.errors import WriteError
from ds_wizard.core.base.fsio import atomic_write_text, write_if_changed

OLD = '{"train_batch_size": 16}\n'
NEW = '{"train_batch_size": 128, "note": "café"}\n'


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def test_new_file_gets_the_text_and_the_umask_mode(tmp_path):
    target = tmp_path / "ds.json"
    assert atomic_write_text(target, NEW, backup=True) is None  # nothing to back up
    assert target.read_bytes() == NEW.encode("utf-8")
    assert mode(target) == 0o666 & ~current_umask()  # not mkstemp's 0600
    assert names(tmp_path) == ["ds.json"]


def test_existing_file_is_replaced_with_a_backup_and_keeps_its_mode(tmp_path):
    target = tmp_path / "ds.json"
    target.write_text(OLD, encoding="utf-8")
    target.chmod(0o640)
    backup = atomic_write_text(target, NEW, backup=True)
    assert backup == tmp_path / "ds.json.bak"
    assert backup.read_text(encoding="utf-8") == OLD
    assert target.read_text(encoding="utf-8") == NEW
    assert mode(target) == 0o640
    assert names(tmp_path) == ["ds.json", "ds.json.bak"]


def test_no_backup_unless_asked(tmp_path):
    target = tmp_path / "ds.json"
    target.write_text(OLD, encoding="utf-8")
    assert atomic_write_text(target, NEW) is None
    assert target.read_text(encoding="utf-8") == NEW
    assert names(tmp_path) == ["ds.json"]


def refuse(*args, **kwargs):
    raise PermissionError(13, "Permission denied")


def disk_full(*args, **kwargs):
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize(("module", "name", "failure"), [
    (tempfile, "mkstemp", refuse),  # read-only directory: no temp file at all
    (os, "fsync", disk_full),       # the temp file was being written when the disk filled
    (os, "replace", refuse),        # the rename is refused
], ids=["mkstemp", "fsync", "replace"])
@pytest.mark.parametrize("backup", [False, True], ids=["plain", "backup"])
def test_a_failed_write_leaves_the_file_as_it_was(tmp_path, monkeypatch, module, name,
                                                  failure, backup):
    target = tmp_path / "ds.json"
    target.write_text(OLD, encoding="utf-8")
    target.chmod(0o640)
    monkeypatch.setattr(module, name, failure)
    with pytest.raises(WriteError) as info:
        atomic_write_text(target, NEW, backup=backup)
    assert info.value.one_line().startswith(f"cannot write {target}")
    assert target.read_text(encoding="utf-8") == OLD and mode(target) == 0o640
    assert names(tmp_path) == ["ds.json"]  # no temp file, and no backup either


def test_a_refused_final_rename_keeps_the_original_and_its_backup(tmp_path, monkeypatch):
    target = tmp_path / "ds.json"
    target.write_text(OLD, encoding="utf-8")
    real_replace = os.replace

    def replace(src, dst, **kwargs):
        if Path(dst) == target:
            refuse()
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(WriteError, match="Permission denied"):
        atomic_write_text(target, NEW, backup=True)
    assert target.read_text(encoding="utf-8") == OLD
    assert (tmp_path / "ds.json.bak").read_text(encoding="utf-8") == OLD
    assert names(tmp_path) == ["ds.json", "ds.json.bak"]


@pytest.mark.parametrize(("where", "message"), [
    ("ds.json", "is a directory"),
    ("missing/ds.json", "does not exist"),
])
def test_impossible_targets_are_one_line_errors(tmp_path, where, message):
    (tmp_path / "ds.json").mkdir()
    with pytest.raises(WriteError, match=message):
        atomic_write_text(tmp_path / where, NEW)
    assert names(tmp_path) == ["ds.json"]


def test_write_if_changed_leaves_an_identical_file_alone(tmp_path):
    target = tmp_path / "ds.json"
    target.write_text(NEW, encoding="utf-8")
    inode = target.stat().st_ino
    assert write_if_changed(target, NEW, backup=True) == (False, None)
    assert target.stat().st_ino == inode  # not even replaced by an identical copy
    assert names(tmp_path) == ["ds.json"]


def test_write_if_changed_writes_a_different_text(tmp_path):
    target = tmp_path / "ds.json"
    target.write_text(OLD, encoding="utf-8")
    wrote, backup = write_if_changed(target, NEW, backup=True)
    assert wrote and backup == tmp_path / "ds.json.bak"
    assert target.read_text(encoding="utf-8") == NEW
    assert backup.read_text(encoding="utf-8") == OLD
    assert write_if_changed(tmp_path / "fresh.json", NEW) == (True, None)
    assert (tmp_path / "fresh.json").read_text(encoding="utf-8") == NEW
