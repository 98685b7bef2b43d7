"""core/base/system.py: one answer to "is this process alive" (a zombie is dead), memory and
disks from psutil, and psutil's failures as one-line SystemFactError."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from ds_wizard.core.base import system
from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.base.system import SystemFactError, pid_alive
from ds_wizard.core.presets.lookup import load_preset
from ds_wizard.core.runs.runspec import Accelerator
from ds_wizard.core.runs.runstate import describe_disk, disk_nearly_full
from ds_wizard.launch.host_fit import check_cpu_ranks
from ds_wizard.launch.plan import resolve_config

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="psutil.PROCFS_PATH exists on Linux only")


def _wait_for_status(pid: int, status: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while psutil.Process(pid).status() != status:
        assert time.monotonic() < deadline, f"{pid} never became {status}"
        time.sleep(0.02)


def test_a_running_process_is_alive_and_a_zombie_is_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        assert pid_alive(child.pid)
        child.stdin.close()  # the child exits; not waiting for it leaves a real zombie
        _wait_for_status(child.pid, psutil.STATUS_ZOMBIE)
        assert not pid_alive(child.pid)
    finally:
        child.kill()
        child.wait(timeout=20)
    assert not pid_alive(child.pid)  # reaped: gone altogether


def test_a_forked_zombie_is_dead() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)  # the child leaves at once; the parent does not reap it yet
    try:
        _wait_for_status(pid, psutil.STATUS_ZOMBIE)
        assert not pid_alive(pid)
    finally:
        os.waitpid(pid, 0)


def test_this_process_is_alive_and_process_groups_are_not_processes() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(0) and not pid_alive(-os.getpid())


def test_a_process_we_may_not_inspect_is_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    # another user's process: psutil refuses to read it, but it exists (root sees every
    # process, so the refusal is simulated)
    def denied(self: psutil.Process) -> str:
        raise psutil.AccessDenied(self.pid)

    monkeypatch.setattr(psutil.Process, "status", denied)
    assert pid_alive(os.getpid())


def test_memory_and_disk_come_from_psutil(tmp_path: Path) -> None:
    assert 0 < system.available_memory() <= psutil.virtual_memory().total
    disk = system.disk_of(tmp_path / "not" / "made" / "yet")  # judged by tmp_path
    usage = psutil.disk_usage(str(tmp_path))
    assert disk.total == usage.total and 0 <= disk.free <= disk.total
    assert tmp_path.resolve().is_relative_to(disk.mount)
    assert disk.fstype in {p.fstype for p in psutil.disk_partitions(all=True)
                           if p.mountpoint == disk.mount}
    assert describe_disk(tmp_path).startswith(f"the disk at {disk.mount} ({disk.fstype}, ")


@linux_only
def test_psutil_failures_are_one_line_errors(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    # a real failure inside psutil: its /proc points at an empty directory
    monkeypatch.setattr(psutil, "PROCFS_PATH", str(tmp_path))
    for probe in (system.available_memory, lambda: system.mount_of(tmp_path),
                  lambda: system.disk_of(tmp_path)):
        with pytest.raises(SystemFactError) as err:
            probe()
        assert isinstance(err.value, DsWizardError)
        line = err.value.one_line()
        assert line.startswith("cannot read ") and "\n" not in line
        assert "/proc is mounted" in line


@linux_only
def test_callers_decide_what_an_unknown_fact_means(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.setattr(psutil, "PROCFS_PATH", str(tmp_path))
    # a full-disk report still names the path and says why the disk is unknown
    said = describe_disk(tmp_path)
    assert said.startswith(f"the disk holding {tmp_path} (cannot read the mounted")
    assert not disk_nearly_full(tmp_path)
    # unknown RAM does not refuse a launch; known RAM that is too small does
    preset = load_preset("7b_mamba")
    cfg, _ = resolve_config(preset, 2, Accelerator("cpu", 0, "test"))
    check_cpu_ranks(cfg, preset.spec, 2, "7b_mamba")
    with pytest.raises(DsWizardError):
        check_cpu_ranks(cfg, preset.spec, 2, "7b_mamba", available=1 << 30)
