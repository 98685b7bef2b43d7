"""Issue 23, "scripts that cannot be injected": every value written into
``launch_deepspeed.sh``, the sbatch script or a hostfile goes through one function
(``launch.command.shell_word``: ``shlex.quote``, or a refusal for a control character or a
line break), and ``#SBATCH`` lines take no value with a line break.

Each generated script is run by bash with stand-in tools on PATH (``scontrol``,
``deepspeed``, ``srun``, ``sbatch``) and hostile values in every path and name: newlines,
``$()``, backticks, quotes, semicolons and spaces. The stand-in ``deepspeed`` records the
arguments it got; the assertion is that the marker file the hostile values try to create
never exists, and that the values arrive unchanged, as single arguments.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes import NO_GPU, patch_gpus

from ds_wizard.cli import main
from ds_wizard.core.batch.topology import HostfileError, Topology, parse_hostfile
from ds_wizard.launch.command import (
    ScriptValueError,
    hostfile_text,
    sbatch_text,
    script_text,
    shell_word,
)

ROOT = Path(__file__).resolve().parents[2]


def hostile_names(marker: Path) -> list[str]:
    """Directory names that run ``touch $MARK`` (the marker, through the environment, so
    a name holds no ``/``) if a script ever leaves them unquoted."""
    return ["r$(touch $MARK)", "r`touch $MARK`", "r'; touch $MARK; '", 'r"; touch $MARK; "',
            "r x;touch $MARK", "r $(touch $MARK) #x", "r${MARK:+$(touch $MARK)}",
            "r*?[a]{b,c}~!&|<>\\"]


def fake_tools(tmp: Path) -> tuple[Path, Path]:
    """A bin directory of stand-ins, and the file where ``deepspeed`` records its argv."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    record = tmp / "argv.json"
    recorder = (f"#!{sys.executable}\nimport json, sys\n"
                f"json.dump(sys.argv[1:], open({str(record)!r}, 'w'))\n")
    for tool in ("deepspeed", "srun", "sbatch"):
        (bin_dir / tool).write_text(recorder)
    (bin_dir / "scontrol").write_text("#!/usr/bin/env bash\nprintf 'node1\\nnode2\\n'\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return bin_dir, record


def run_script(script: Path, bin_dir: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    marker = bin_dir.parent / "pwned"
    full = {**os.environ, "MARK": str(marker), "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "PYTHONPATH": str(ROOT), "DS_WIZARD_DEEPSPEED": str(bin_dir / "deepspeed"), **env}
    return subprocess.run(["bash", str(script)], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=60)


def test_shell_word_quotes_or_refuses() -> None:
    assert shell_word("a b") == "'a b'"
    assert shell_word("$(x)") == "'$(x)'"
    for bad in ("a\nb", "a\rb", "a\x1b]52;c;x\x07", "a\x00b", "a\u2028b", "a\x9bb"):
        with pytest.raises(ScriptValueError):
            shell_word(bad)


def test_launch_script_runs_hostile_paths_as_plain_arguments(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    marker = tmp_path / "pwned"
    bin_dir, record = fake_tools(tmp_path)
    for i, name in enumerate(hostile_names(marker)):
        work = tmp_path / f"w{i}" / name  # the working directory is written into the script
        work.mkdir(parents=True)
        monkeypatch.chdir(work)
        run_dir = work / name
        command = [str(bin_dir / "deepspeed"), "--num_accelerators=2", "--master_port=1",
                   "--module", "ds_wizard.train", "--run-dir", str(run_dir),
                   "--data", f"{work}/{name}.txt", "--tokenizer", name]
        script = tmp_path / f"launch{i}.sh"
        script.write_text(script_text(command, {"DS_WIZARD_X": name}))
        proc = run_script(script, bin_dir, work)
        assert proc.returncode == 0, proc.stderr
        assert not marker.exists(), f"{name!r} ran a command"
        got = json.loads(record.read_text())
        assert str(run_dir) in got and name in got and f"{work}/{name}.txt" in got
        record.unlink()


def test_sbatch_script_runs_hostile_run_dir_as_plain_text(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    marker = tmp_path / "pwned"
    bin_dir, record = fake_tools(tmp_path)
    topo = Topology((1, 1), "test")
    for i, name in enumerate(hostile_names(marker)):
        work = tmp_path / f"w{i}"
        work.mkdir()
        monkeypatch.chdir(work)
        run_dir = work / name
        run_dir.mkdir()
        command = [sys.executable, "-m", "deepspeed.launcher.runner", "--master_port=1",
                   "--module", "ds_wizard.train", "--run-dir", str(run_dir)]
        if '"' in name:  # sbatch cannot take one in a #SBATCH line: refused, not written
            with pytest.raises(ScriptValueError, match="double quote"):
                sbatch_text(run_dir, command, {}, topo, gpus=True, job_name=f"ds-{name}")
            continue
        text = sbatch_text(run_dir, command, {"DS_WIZARD_X": name}, topo, gpus=True,
                           job_name=f"ds-wizard-{name}")
        for line in text.splitlines():
            if line.startswith("#SBATCH"):
                assert "pwned" not in line or '"' in line  # quoted for sbatch, one argument
        script = tmp_path / f"job{i}.sbatch"
        script.write_text(text)
        proc = run_script(script, bin_dir, work, SLURM_JOB_NODELIST="node[1-2]")
        assert proc.returncode == 0, proc.stderr
        assert not marker.exists(), f"{name!r} ran a command"
        got = json.loads(record.read_text())
        assert str(run_dir) in got
        assert (run_dir / "hostfile").read_text() == "node1 slots=1\nnode2 slots=1\n"
        record.unlink()


@pytest.mark.parametrize("bad", ["r\ntouch {m} #", "r\rtouch {m}", "r\x1b]0;x\x07"])
def test_a_line_break_in_a_path_is_refused_not_written(tmp_path: Path, bad: str) -> None:
    marker = tmp_path / "pwned"
    run_dir = tmp_path / bad.format(m=marker)
    topo = Topology((1, 1), "test")
    with pytest.raises(ScriptValueError):
        sbatch_text(run_dir, ["x", "--a"], {}, topo, gpus=True, job_name="ds-wizard-x")
    with pytest.raises(ScriptValueError):
        script_text(["x", "--run-dir", str(run_dir)], {})


def test_hostfile_names_are_host_names() -> None:
    for line in ("$(touch x) slots=1", "`id` slots=1", "a;b slots=1", "'a' slots=1"):
        with pytest.raises(HostfileError):
            parse_hostfile(line)
    hosts = parse_hostfile("worker-1 slots=2\n10.0.0.2 slots=2\n")
    topo = Topology((2, 2), "test", hosts=hosts)
    assert hostfile_text(topo).splitlines()[1:] == ["worker-1 slots=2", "10.0.0.2 slots=2"]


def test_issue_repro_launch_slurm_runs_dir_with_a_newline(tmp_path: Path, home: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """The reproduction of issue 23 (1): refused with one line, nothing written."""
    patch_gpus(monkeypatch, NO_GPU)
    marker = tmp_path / "pwned"
    runs = tmp_path / "x"
    runs.mkdir()
    hostile = f"{runs}/r\ntouch {marker} #"
    for cmd in (["launch", "--preset", "tiny_mamba", "--slurm", "--num-nodes", "2",
                 "--gpus-per-node", "1", "--runs-dir", hostile],
                ["generate", "--preset", "tiny_mamba", "--slurm", "--num-nodes", "2",
                 "--gpus-per-node", "1", "--runs-dir", hostile, "--out-dir", str(tmp_path)]):
        result = CliRunner().invoke(main, cmd)
        assert result.exit_code == 1, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ")
        assert "line break" in lines[0]
        assert list(runs.iterdir()) == []  # no run directory, no script
        assert not marker.exists()
        assert not list(tmp_path.glob("*.sbatch")) and not list(tmp_path.glob("*.sh"))


def test_issue_repro_launch_slurm_with_quotes_and_dollars_runs_nothing(
        tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same launch with a runs dir full of shell syntax (but no line break) is written,
    and its sbatch script, run with stand-ins, creates no marker."""
    patch_gpus(monkeypatch, NO_GPU)
    marker = tmp_path / "pwned"
    bin_dir, record = fake_tools(tmp_path)
    runs = tmp_path / "r $(touch $MARK) `touch $MARK` ';touch $MARK'"
    result = CliRunner().invoke(main, ["launch", "--preset", "tiny_mamba", "--slurm",
                                       "--num-nodes", "2", "--gpus-per-node", "1",
                                       "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    (sbatch,) = runs.glob("*/launch_slurm.sbatch")
    proc = run_script(sbatch, bin_dir, home / "work", SLURM_JOB_NODELIST="node[1-2]")
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()
    got = json.loads(record.read_text())
    assert str(sbatch.parent.resolve()) in got
