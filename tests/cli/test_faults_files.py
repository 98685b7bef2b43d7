"""Issue 15, the file, input, limit and output faults (2, 3, 8, 9 and 10), each through the
real command: one error line (or a clean result), the documented exit code (``ExitCode``),
inputs byte for byte as they were, special files untouched and no temp file left behind.

Special files are real: FIFOs made with mkfifo and device nodes made with mknod under a
temp directory (skipped where mknod is not permitted), ``/dev/zero`` and ``/dev/full``.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes import NO_GPU, patch_gpus, run_cli, start_cli, write_seed

from ds_wizard.cli import main
from ds_wizard.core.base import fsio
from ds_wizard.core.base.errors import ExitCode
from ds_wizard.core.base.fsio import AlreadyExists, create_new_text, write_all

TINY = ["--preset", "tiny_mamba"]
ESCAPES = "\x1b]0;pwned\x07\x1b[31mred\x1b[0m\x1b[2K\rhidden\x9b31m\u202eevil"


# ------------------------------------------------------------------------------ helpers


def one_error_line(stderr: str) -> str:
    """The one line a failure prints: ``error: …``, no traceback, nothing else on stderr."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


def temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".ds-wizard-" in p.name
                  or p.name.endswith(".tmp"))


def kind(path: Path) -> str:
    mode = os.lstat(path).st_mode
    return fsio.kind_of(mode) if not stat.S_ISREG(mode) else "regular"


def make_fifo(directory: Path, name: str) -> Path:
    path = directory / name
    os.mkfifo(path)
    return path


def make_device(directory: Path, name: str, minor: int) -> Path:
    """A character device like /dev/null (1, 3) or /dev/zero (1, 5), if mknod is allowed."""
    path = directory / name
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
    except (PermissionError, OSError) as exc:
        pytest.skip(f"mknod not permitted here: {exc}")
    return path


@pytest.fixture
def work(home: Path) -> Path:
    return Path.cwd()


# ------------------------------------ fault 2: an output onto a special file replaces it


def _output_commands(seed: Path, out: Path) -> dict[str, list[str]]:
    return {
        "auto": ["--auto", "--num-gpus", "2", *TINY, "--output", str(out)],
        "fix": ["fix", str(seed), "--num-gpus", "4", "-o", str(out)],
        "export": ["presets", "export", "tiny_mamba", "-o", str(out), "--force"],
    }


@pytest.mark.parametrize("command", ["auto", "fix", "export"])
@pytest.mark.parametrize("special", ["fifo", "null-device", "full-device", "directory"])
def test_fault2_output_onto_a_special_file_is_refused(work, command, special):
    seed = write_seed(work)
    before = seed.read_bytes()
    if special == "fifo":
        out = make_fifo(work, "out.json")
    elif special == "directory":
        out = work / "out.json"
        out.mkdir()
    else:
        out = make_device(work, "out.json", 3 if special == "null-device" else 7)
    was = kind(out)
    proc = run_cli(*_output_commands(seed, out)[command], cwd=work, timeout=30)
    assert proc.returncode == ExitCode.PROBLEM, proc.stdout + proc.stderr
    line = one_error_line(proc.stderr)
    assert "not a regular file" in line or "is a directory" in line
    assert kind(out) == was  # still the FIFO / device / directory it was
    assert not (work / "out.json.bak").exists()
    assert seed.read_bytes() == before
    assert temp_files(work) == []


def test_fault2_proc_self_fd_1_is_refused_not_read(work):
    """stdout is a pipe here: reading it for a .bak would hang; it is refused at once."""
    seed = write_seed(work)
    before = seed.read_bytes()
    proc = run_cli("fix", str(seed), "--num-gpus", "4", "-o", "/proc/self/fd/1", cwd=work,
               timeout=30)
    assert proc.returncode == ExitCode.PROBLEM
    assert "FIFO" in one_error_line(proc.stderr)
    assert seed.read_bytes() == before
    assert temp_files(work) == []


def test_fault2_real_dev_null_is_not_replaced(work):
    st = os.stat("/dev/null")
    proc = run_cli("--auto", "--num-gpus", "2", *TINY, "--output", "/dev/null", cwd=work)
    assert proc.returncode == ExitCode.PROBLEM
    assert "character device" in one_error_line(proc.stderr)
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == st.st_rdev
    assert not Path("/dev/null.bak").exists()


# ------------------------------------------------ fault 3: inputs that are not regular files


@pytest.mark.parametrize("special", ["fifo", "zero-device", "dev-zero"])
@pytest.mark.parametrize("command", ["check", "fix", "launch", "presets-show", "presets-import"])
def test_fault3_special_input_is_refused_at_once(work, special, command):
    if special == "fifo":
        src = make_fifo(work, "input.toml")
    elif special == "zero-device":
        src = make_device(work, "input.toml", 5)
    else:
        src = Path("/dev/zero")
    args = {
        "check": ["check", str(src), "--num-gpus", "1"],
        "fix": ["fix", str(src), "--num-gpus", "1"],
        "launch": ["launch", *TINY, "--config", str(src), "--dry-run"],
        "presets-show": ["presets", "show", str(src)],
        "presets-import": ["presets", "import", str(src), "--name", "x"],
    }[command]
    proc = run_cli(*args, cwd=work, timeout=30)  # a FIFO read or /dev/zero would time out
    assert proc.returncode == ExitCode.PROBLEM
    assert "not a regular file" in one_error_line(proc.stderr)
    assert temp_files(work) == []


def test_fault3_input_over_the_cap_is_refused_without_reading_it(work):
    big = work / "big.json"
    with big.open("wb") as fh:  # sparse: 64 MiB of nothing, stat says so
        fh.truncate(64 << 20)
    proc = run_cli("check", str(big), "--num-gpus", "1", cwd=work)
    assert proc.returncode == ExitCode.PROBLEM
    assert "larger than the 4 MiB limit" in one_error_line(proc.stderr)


def test_fault3_read_input_caps_a_file_that_lies_about_its_size(tmp_path):
    """/proc files say size 0; the read itself stops at the cap."""
    with pytest.raises(fsio.InputError, match="larger than"):
        fsio.read_input("/proc/self/maps", limit=16)


@pytest.mark.parametrize("args", [
    ["check", "missing.json", "--num-gpus", "1"],
    ["fix", "missing.json", "--num-gpus", "1"],
    ["launch", *TINY, "--config", "missing.json", "--dry-run"],
    ["presets", "show", "./missing.toml"],
    ["presets", "import", "missing.toml"],
    ["presets", "validate", "missing.toml"],
    ["--auto", "--num-gpus", "1", "--preset", "./missing.toml", "--dry-run"],
    ["check", ".", "--num-gpus", "1"],
])
def test_fault9_unreadable_input_exits_the_same_code_everywhere(work, args):
    proc = run_cli(*args, cwd=work)
    assert proc.returncode == ExitCode.PROBLEM, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


# ------------------------------------------------------------------------- fault 8: writes


def test_fault8_a_killed_writers_temp_file_is_named_and_cleaned_by_the_next_write(work):
    seed = write_seed(work)
    # a writer killed between writing its temp file and renaming it
    killed = subprocess.run([sys.executable, "-c", (
        "import os, sys\n"
        "from ds_wizard.core.base import fsio\n"
        "os.replace = lambda *a, **k: os._exit(9)\n"
        f"fsio.atomic_write_text({str(seed)!r}, 'half')\n"
    )], capture_output=True, text=True, timeout=60)
    assert killed.returncode == 9
    left = temp_files(work)
    assert len(left) == 1 and left[0].startswith(f".{seed.name}.ds-wizard-"), left
    before = seed.read_bytes()
    time.sleep(0.05)  # the next writer starts strictly after the temp file was written
    proc = run_cli("--auto", "--num-gpus", "2", *TINY, "--output", "other.json", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert temp_files(work) == []
    assert seed.read_bytes() == before


def test_fault8_a_live_writers_temp_file_is_left_alone(work):
    live = work / f".x.json.ds-wizard-{os.getpid()}-abc123.tmp"  # this process is alive
    live.write_text("in progress")
    old = time.time() - 3600
    os.utime(live, (old, old))
    proc = run_cli("--auto", "--num-gpus", "2", *TINY, "--output", "x.json", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert live.exists()


def test_fault8_generate_writes_all_files_or_none(work):
    one = work / "deepspeed_1gpu.json"
    one.write_text("{}\n")
    before = one.read_bytes()
    blocker = make_fifo(work, "deepspeed_4gpu.json")
    proc = run_cli("generate", *TINY, "--gpus", "1,2,4", cwd=work, timeout=30)
    assert proc.returncode == ExitCode.PROBLEM
    line = one_error_line(proc.stderr)
    assert "deepspeed_4gpu.json" in line and "nothing was written" in line
    assert one.read_bytes() == before
    assert not (work / "deepspeed_2gpu.json").exists()
    assert not (work / "deepspeed_1gpu.json.bak").exists()
    assert kind(blocker) == "a FIFO (named pipe)"
    assert temp_files(work) == []


def test_fault8_generate_rolls_back_when_a_rename_fails(work, monkeypatch):
    patch_gpus(monkeypatch, NO_GPU)
    one = work / "deepspeed_1gpu.json"
    one.write_text("{}\n")
    before = one.read_bytes()
    real_replace = os.replace

    def fail_on_the_4gpu_file(src, dst, *a, **k):
        if str(dst).endswith("deepspeed_4gpu.json"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", fail_on_the_4gpu_file)
    result = CliRunner().invoke(main, ["generate", *TINY, "--gpus", "1,2,4"])
    assert result.exit_code == ExitCode.PROBLEM, result.output
    line = one_error_line(result.stderr)
    assert "deepspeed_4gpu.json" in line and "No space left" in line
    assert "no file was changed" in line
    assert one.read_bytes() == before
    assert not (work / "deepspeed_2gpu.json").exists()
    assert temp_files(work) == []


def test_fault8_generate_reports_exactly_which_files_changed(work):
    first = run_cli("generate", *TINY, "--gpus", "1,2", cwd=work)
    assert first.returncode == 0, first.stderr
    assert "created   deepspeed_1gpu.json" in first.stdout
    assert "wrote 2 of 2 file(s)" in first.stdout
    again = run_cli("generate", *TINY, "--gpus", "1,2,4", cwd=work)
    assert "unchanged deepspeed_1gpu.json" in again.stdout
    assert "unchanged deepspeed_2gpu.json" in again.stdout
    assert "created   deepspeed_4gpu.json" in again.stdout
    assert "wrote 1 of 3 file(s), 2 already up to date" in again.stdout
    changed = run_cli("generate", *TINY, "--gpus", "1", "--set", "batch.micro_batch=1", cwd=work)
    assert "updated   deepspeed_1gpu.json (previous version: deepspeed_1gpu.json.bak)" \
        in changed.stdout
    data = json.loads(run_cli("generate", *TINY, "--gpus", "1,2", "--json", cwd=work).stdout)
    assert [row["changed"] for row in data] == [True, False]


def test_fault8_create_new_text_loses_the_race_cleanly(tmp_path, monkeypatch):
    """Another process creates the name between the check and the link: refused, and what
    it wrote stays."""
    dest = tmp_path / "mine.toml"
    real_lexists = os.path.lexists

    def racing_lexists(path):
        seen = real_lexists(path)
        if Path(path) == dest and not seen:
            dest.write_text("theirs\n")  # the other import wins right now
        return seen

    monkeypatch.setattr(os.path, "lexists", racing_lexists)
    with pytest.raises(AlreadyExists):
        create_new_text(dest, "mine\n")
    assert dest.read_text() == "theirs\n"
    assert temp_files(tmp_path) == []


def test_fault8_concurrent_imports_of_one_name_exactly_one_wins(work):
    src = work / "shared.toml"
    src.write_text(Path(__file__).parents[2].joinpath("presets/tiny_mamba.toml").read_text())
    procs = [start_cli("presets", "import", str(src), "--name", "team", cwd=work,
                       stderr=subprocess.PIPE, start_new_session=False) for _ in range(4)]
    results = [(p.wait(timeout=60), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert sorted(code for code, _ in results) == [0, 1, 1, 1], results
    for code, err in results:
        if code:
            assert "already exists" in one_error_line(err)
    user = Path(os.environ["DS_WIZARD_CONFIG_DIR"]) / "presets"
    assert (user / "team.toml").read_bytes() == src.read_bytes()
    assert temp_files(user) == []


def test_fault8_concurrent_create_new_text_in_threads(tmp_path):
    dest = tmp_path / "once.txt"
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def create(i: int) -> None:
        barrier.wait()
        try:
            create_new_text(dest, f"writer {i}\n")
            outcomes.append("won")
        except AlreadyExists:
            outcomes.append("refused")

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused"] * 7 + ["won"]
    assert temp_files(tmp_path) == []


def _fix(path: Path) -> subprocess.CompletedProcess:
    return run_cli("fix", str(path), "--num-gpus", "4", cwd=path.parent)


def test_fault8_fix_keeps_a_private_mode_on_the_file_and_its_backup(work):
    seed = write_seed(work)
    seed.chmod(0o600)
    assert _fix(seed).returncode == 0
    assert stat.S_IMODE(seed.stat().st_mode) == 0o600
    assert stat.S_IMODE((work / (seed.name + ".bak")).stat().st_mode) == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_fault8_fix_as_root_keeps_the_owner(work):
    seed = write_seed(work)
    os.chown(seed, 4321, 4321)
    assert _fix(seed).returncode == 0
    for path in (seed, work / (seed.name + ".bak")):
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (4321, 4321), path


def test_fault8_fix_writes_through_a_symlink(work):
    real_dir = work / "configs"
    real_dir.mkdir()
    real = write_seed(real_dir, "real.json")
    before = real.read_bytes()
    link = work / "ds.json"
    link.symlink_to(real)
    proc = _fix(link)
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert json.loads(real.read_text())["train_batch_size"] == 128
    assert (real_dir / "real.json.bak").read_bytes() == before
    assert temp_files(work) == [] and temp_files(real_dir) == []


def test_fault8_fix_keeps_hard_links(work):
    seed = write_seed(work)
    before = seed.read_bytes()
    other = work / "same-file.json"
    os.link(seed, other)
    inode = seed.stat().st_ino
    assert _fix(seed).returncode == 0
    assert seed.stat().st_ino == inode and seed.stat().st_nlink == 2
    assert other.read_bytes() == seed.read_bytes()
    assert json.loads(other.read_text())["train_batch_size"] == 128
    assert (work / (seed.name + ".bak")).read_bytes() == before
    assert temp_files(work) == []


def test_fault8_a_failed_in_place_write_puts_the_old_content_back(tmp_path, monkeypatch):
    target = tmp_path / "linked.json"
    target.write_text("old\n")
    os.link(target, tmp_path / "other.json")
    real_write = os.write
    calls = {"n": 0}

    def full_disk(fd, data):
        calls["n"] += 1
        if calls["n"] == 2:  # the in-place write, after the .bak copy
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(fsio.WriteError, match="previous content was put back"):
        fsio.atomic_write_text(target, "new content\n")
    assert target.read_text() == "old\n" and (tmp_path / "other.json").read_text() == "old\n"


def test_fault8_write_all_leaves_matching_files_alone(tmp_path):
    a = tmp_path / "a.json"
    a.write_text("same\n")
    mtime = a.stat().st_mtime_ns
    changes = write_all([(a, "same\n"), (tmp_path / "b.json", "new\n")])
    assert [(c.changed, c.created) for c in changes] == [(False, False), (True, True)]
    assert a.stat().st_mtime_ns == mtime and not (tmp_path / "a.json.bak").exists()


# -------------------------------------------- fault 9: one line, the documented exit code


@pytest.mark.parametrize("args", [
    ["generate", *TINY, "--gpus", "²"],
    ["generate", *TINY, "--gpus", "1e30"],
    ["generate", *TINY, "--gpus", "1000000000000"],
    ["--auto", "--num-gpus", "2", *TINY, "--global-batch", "10^12", "--dry-run"],
    ["--auto", "--num-gpus", "2", *TINY, "--global-batch", "1000000000000", "--dry-run"],
    ["--auto", "--num-gpus", "2", *TINY, "--micro-batch", "1000000000000", "--dry-run"],
    ["--auto", "--num-gpus", "1e30", *TINY, "--dry-run"],
    ["--auto", "--num-gpus", "2", *TINY, "--headroom", "nan", "--dry-run"],
    ["plan", *TINY, "--num-gpus", "1", "--gpu-memory", "80GiB", "--headroom", "inf"],
    ["check", "x.json", "--num-gpus", "²"],
    ["launch", *TINY, "--grace", "nan", "--dry-run"],
    ["launch", *TINY, "--steps", "-1", "--dry-run"],
    ["presets", "show", "tiny_mamba", "--gpus", "٣"],
])
def test_fault9_absurd_cli_numbers_are_usage_errors(work, args):
    proc = run_cli(*args, cwd=work, timeout=30)
    assert proc.returncode == ExitCode.USAGE, proc.stdout + proc.stderr
    one_error_line(proc.stderr)
    assert list(work.iterdir()) == []  # nothing written


DEEP = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize("value", [
    "train.betas=" + DEEP,
    "batch.micro_batch=" + "1" * 5000,
    'batch.micro_batch="²"',
    "train.lr=nan",
    "train.lr=inf",
    "batch.by_world_size.².micro_batch=1",
    "batch.by_world_size." + "9" * 5000 + ".micro_batch=1",
])
def test_fault9_absurd_set_values_are_one_line(work, value):
    proc = run_cli("presets", "show", "tiny_mamba", "--set", value, cwd=work)
    assert proc.returncode == ExitCode.PROBLEM
    one_error_line(proc.stderr)


PRESET_HEAD = 'description = "x"\n[model]\nd_model = 64\nn_layer = 2\n[batch]\n'


@pytest.mark.parametrize("batch", [
    'global_batch = "²"\nmicro_batch = 1\n',
    f'global_batch = "{"1" * 5000}"\nmicro_batch = 1\n',
    f'global_batch = {"1" * 5000}\nmicro_batch = 1\n',
    'global_batch = 8\nmicro_batch = 1\n[batch.by_world_size."²"]\nglobal_batch = 8\n'
    'micro_batch = 1\n',
    f'global_batch = 8\nmicro_batch = 1\n[batch.by_world_size."{"1" * 5000}"]\n'
    'global_batch = 8\nmicro_batch = 1\n',
    'global_batch = 8\nmicro_batch = 1\n[train]\nlr = nan\n',
    'global_batch = 8\nmicro_batch = 1\n[train]\ngrad_clip = inf\n',
])
def test_fault9_absurd_preset_batch_values_are_one_line(work, batch):
    path = work / "bad.toml"
    path.write_text(PRESET_HEAD + batch)
    before = path.read_bytes()
    for args in (["presets", "show", str(path)], ["--auto", "--num-gpus", "2", "--preset",
                                                  str(path), "--dry-run"]):
        proc = run_cli(*args, cwd=work)
        assert proc.returncode == ExitCode.PROBLEM, proc.stdout + proc.stderr
        one_error_line(proc.stderr)
    assert path.read_bytes() == before


def test_fault9_full_stdout_is_one_line(work):
    with open("/dev/full", "w") as full:
        proc = run_cli("presets", "list", cwd=work, stdout=full, stderr=subprocess.PIPE,
                       timeout=60)
    assert proc.returncode == ExitCode.PROBLEM
    assert "No space left on device" in one_error_line(proc.stderr)


def test_fault9_closed_stdout_is_one_line(work):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (head) has already gone
    try:
        proc = run_cli("presets", "list", cwd=work, stdout=write_end,
                       stderr=subprocess.PIPE, timeout=60)
    finally:
        os.close(write_end)
    assert proc.returncode == ExitCode.PROBLEM
    assert "Broken pipe" in one_error_line(proc.stderr)


def test_fault9_usage_errors_are_one_line_too(work):
    proc = run_cli("generate", "--no-such-flag", cwd=work)
    assert proc.returncode == ExitCode.USAGE
    assert "--help" in one_error_line(proc.stderr)


# -------------------------------------------------------------- fault 10: terminal escapes


def _team_dir(work: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    team = work.parent / "team"
    team.mkdir()
    monkeypatch.setenv("DS_WIZARD_PRESET_PATH", str(team))
    return team


def _assert_clean(text: str) -> None:
    for bad in ("\x1b", "\x07", "\r", "\x9b", "\u202e"):
        assert bad not in text, repr(text)


def test_fault10_presets_list_strips_escapes_from_descriptions_and_names(work, monkeypatch):
    team = _team_dir(work, monkeypatch)
    good = (Path(__file__).parents[2] / "presets" / "tiny_mamba.toml").read_text()
    desc = json.dumps(ESCAPES)  # a TOML basic string with the escapes in it
    (team / "hostile.toml").write_text(
        "\n".join(f"description = {desc}" if line.startswith("description") else line
                  for line in good.splitlines()) + "\n")
    (team / "evil\x1b[2J\r.toml").write_text(good)
    (team / "broken.toml").write_text(f"description = {desc}\nbogus\x1b[31m = 1\n")
    for args in (["presets", "list"], ["presets", "show", "hostile"],
                 ["presets", "validate", *map(str, sorted(team.iterdir()))]):
        proc = run_cli(*args, cwd=work)
        assert "Traceback" not in proc.stderr
        _assert_clean(proc.stdout + proc.stderr)
    listing = run_cli("presets", "list", cwd=work).stdout
    assert "red hiddenevil" in listing  # the text stays, the escapes go (\r: a space)
    assert "evil[2J" not in listing and "evil.toml" not in listing


def test_fault10_errors_quoting_file_content_are_sanitized(work):
    bad = work / "bad\x1b]0;title\x07.toml"
    bad.write_text('description = "x"\n[model]\nd_model = "\x1b[31m"\n')
    proc = run_cli("presets", "show", str(bad), cwd=work)
    assert proc.returncode == ExitCode.PROBLEM
    _assert_clean(one_error_line(proc.stderr))


@pytest.mark.anyio
async def test_fault10_tui_preset_list_is_sanitized(work, monkeypatch):
    from fakes import gpu_probe as fake_probe
    from textual.widgets import DataTable, Static

    from ds_wizard.app import make_app

    team = _team_dir(work, monkeypatch)
    good = (Path(__file__).parents[2] / "presets" / "tiny_mamba.toml").read_text()
    desc = json.dumps(ESCAPES)
    (team / "hostile.toml").write_text(
        "\n".join(f"description = {desc}" if line.startswith("description") else line
                  for line in good.splitlines()) + "\n")
    app = make_app(fake_probe(4), cursor_blink=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("ctrl+n")
        await pilot.pause()
        table = app.screen.query_one("#preset-table", DataTable)
        row = table.get_row("hostile")
        shown = " ".join(str(cell) for cell in row)
        _assert_clean(shown)
        assert "red hiddenevil" in shown
        table.move_cursor(row=table.get_row_index("hostile"))
        await pilot.pause()
        _assert_clean(str(app.screen.query_one("#preset-desc", Static).render()))


@pytest.mark.anyio
async def test_fault2_tui_review_with_a_fifo_as_output_neither_hangs_nor_writes(work):
    """The review screen reads the target for its diff: a FIFO there is refused, not read."""
    from fakes import gpu_probe as fake_probe
    from textual.widgets import Input
    from tui.tui_pilot import clear_and_type, text_of, to_batch

    from ds_wizard.app import make_app

    fifo = make_fifo(work, "out.json")
    app = make_app(fake_probe(4), cursor_blink=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await to_batch(pilot)
        await pilot.press("ctrl+n")
        await pilot.pause()
        app.screen.query_one("#output", Input).focus()
        await clear_and_type(pilot, str(fifo))
        await pilot.pause()
        assert "FIFO" in str(app.screen.query_one("#diff").render())
        await pilot.press("enter")  # Enter in the path field saves
        await pilot.pause()
        verdict = text_of(app, "#verdict")
        assert "FIFO" in verdict and "✘" in verdict
    assert kind(fifo) == "a FIFO (named pipe)"
    assert temp_files(work) == []
