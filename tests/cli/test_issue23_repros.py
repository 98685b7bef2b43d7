"""Issue 23: each reproduction found by the independent probe, as a test.

(The sbatch injection, reproduction 1, is in tests/launch/test_script_injection.py; the
FIFO, /dev/zero, symlink-loop and oversized cases of every file option of the click tree
are in tests/cli/test_safety_reader.py.) A case that could hang runs in a forked child with
a time limit (tests/_cli_tree.py), so a regression fails instead of stalling the suite.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _cli_tree import Outcome, run_isolated
from click.testing import CliRunner
from fakes import NO_GPU, patch_gpus

from ds_wizard.cli import main
from ds_wizard.core.runs import rundir
from ds_wizard.core.runs.runspec import Accelerator

CONFIG = {"train_batch_size": 8, "train_micro_batch_size_per_gpu": 2,
          "gradient_accumulation_steps": 2}
TINY = ["--preset", "tiny_mamba"]
ESC = "\x1b]52;c;cHduZWQ=\x07"  # OSC 52: write the clipboard


@pytest.fixture(autouse=True)
def _no_gpu(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    patch_gpus(monkeypatch, NO_GPU)


def one_error(outcome: Outcome | object) -> str:
    """The single ``error:`` line of a failed command (asserting there is exactly one)."""
    if isinstance(outcome, Outcome):
        assert outcome.finished, "did not finish"
        assert outcome.error is None, outcome.error
        code, stderr = outcome.exit_code, outcome.stderr
    else:
        assert outcome.exception is None or isinstance(outcome.exception, SystemExit), \
            outcome.exception
        code, stderr = outcome.exit_code, outcome.stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert code not in (0, None), stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "Traceback" not in stderr
    return lines[0]


def cfg_file(tmp: Path, data: object, name: str = "ds.json") -> Path:
    p = tmp / name
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return p


# --------------------------------------------------------------- 2. unsafe reads


@pytest.mark.parametrize("cmd", [["plan", *TINY], ["check", "{cfg}"], ["generate", *TINY,
                                 "--out-dir", "{out}"], ["launch", *TINY, "--dry-run"],
                                 ["--auto", *TINY, "--dry-run"]])
@pytest.mark.parametrize("target", ["fifo", "/dev/zero"])
def test_hostfile_fifo_and_dev_zero(cmd: list[str], target: str, tmp_path: Path) -> None:
    fifo = tmp_path / "hosts"
    os.mkfifo(fifo)
    cfg = cfg_file(tmp_path, CONFIG)
    args = [a.format(cfg=cfg, out=tmp_path) for a in cmd]
    hostfile = str(fifo) if target == "fifo" else target
    line = one_error(run_isolated([*args, "--hostfile", hostfile], timeout=60))
    assert "not a regular file" in line


@pytest.mark.parametrize("slots", ["9" * 5000, "99999999999999999999999"],
                         ids=["5000-digits", "23-digits"])
def test_hostfile_slot_counts_are_capped(slots: str, tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(f"node1 slots={slots}\nnode2 slots=1\n")
    line = one_error(CliRunner().invoke(main, ["plan", *TINY, "--hostfile", str(hosts)]))
    assert "slots" in line


@pytest.mark.parametrize("target", ["fifo", "/dev/zero"])
def test_hf_args_fifo_and_dev_zero(target: str, tmp_path: Path) -> None:
    fifo = tmp_path / "args.json"
    os.mkfifo(fifo)
    cfg = cfg_file(tmp_path, CONFIG)
    path = str(fifo) if target == "fifo" else target
    line = one_error(run_isolated(["check", str(cfg), "--num-gpus", "2", "--hf-args", path],
                                  timeout=30))
    assert "not a regular file" in line


@pytest.fixture(scope="module")
def prepared_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run directory (run.json, config, preset, scripts), as launch writes it."""
    from ds_wizard.launch.plan import LaunchRequest, prepare_run

    runs = tmp_path_factory.mktemp("runs")
    plan = prepare_run(LaunchRequest("tiny_mamba", steps=5, runs_dir=runs,
                                     accelerator=Accelerator("cpu", 0, "test")))
    assert plan.run_dir is not None
    return plan.run_dir


@pytest.mark.parametrize("which", ["state.json", "metrics.jsonl", "train.log", "marker"])
def test_a_fifo_among_the_run_files_hangs_nothing(which: str, prepared_run: Path,
                                                  tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    run = runs / prepared_run.name
    subprocess.run(["cp", "-a", str(prepared_run), str(run)], check=True)
    if which == "marker":
        tag = run / rundir.CHECKPOINTS / "global_step2"
        tag.mkdir(parents=True)
        (run / rundir.CHECKPOINTS / "latest").write_text("global_step2")
        os.mkfifo(tag / rundir.MARKER)
    else:
        os.mkfifo(run / which)
    for args in (["runs", "--runs-dir", str(runs)], ["runs", "--json", "--runs-dir", str(runs)],
                 ["stop", run.name, "--runs-dir", str(runs)],
                 ["attach", run.name, "--runs-dir", str(runs)],
                 ["launch", "--resume", run.name, "--runs-dir", str(runs), "--dry-run"]):
        outcome = run_isolated(args, timeout=30)
        assert outcome.finished, f"{args} hangs on a FIFO {which}"
        assert outcome.error is None, outcome.error
        assert len([ln for ln in outcome.stderr.splitlines() if ln.startswith("error:")]) <= 1


def test_a_deeply_nested_state_json_still_lists_the_run(prepared_run: Path,
                                                       tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    run = runs / prepared_run.name
    subprocess.run(["cp", "-a", str(prepared_run), str(run)], check=True)
    (run / "state.json").write_text("[" * 100_000 + "]" * 100_000)
    result = CliRunner().invoke(main, ["runs", "--json", "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    assert [r["name"] for r in json.loads(result.stdout)] == [run.name]


def test_explain_finds_an_error_in_the_middle_of_a_big_log(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    filler = b"[INFO] step done, loss 1.0 " + b"x" * 100 + b"\n"
    with log.open("wb") as fh:
        for _ in range(200_000):  # ~25 MiB before the error
            fh.write(filler)
        fh.write(b"AssertionError: Check batch related parameters. train_batch_size is not "
                 b"equal to micro_batch_per_gpu * gradient_acc_step * world_size "
                 b"16 != 2 * 1 * 4\n")
        for _ in range(200_000):  # and as much after it
            fh.write(filler)
    result = CliRunner().invoke(main, ["explain", str(log)])
    assert result.exit_code == 0, result.output
    assert "16 != 2 * 1 * 4" in result.stdout


def test_explain_reads_stdin_line_by_line(tmp_path: Path) -> None:
    # a big stdin is scanned in one pass; only the matching lines are kept
    text = "noise\n" * 500_000 + "world_size 16 != 1 * 1 * 1\n"
    result = CliRunner().invoke(main, ["explain", "-"], input=text)
    assert result.exit_code == 0 and "world size DeepSpeed saw: 1" in result.stdout


def test_launch_data_symlink_loop_is_one_line(tmp_path: Path) -> None:
    loop = tmp_path / "loop.txt"
    os.symlink(loop, loop)
    for data in (str(loop), str(tmp_path / "missing.txt")):
        line = one_error(CliRunner().invoke(main, ["launch", *TINY, "--num-gpus", "2",
                                                   "--dry-run", "--data", data]))
        assert "data" in line


# ------------------------------------------------------------- 3. terminal escapes


def test_a_preset_file_named_with_an_escape_prints_no_escape(tmp_path: Path,
                                                             home: Path) -> None:
    d = tmp_path / "team"
    d.mkdir()
    source = Path(CliRunner().invoke(main, ["presets", "export", "tiny_mamba"]).stdout)
    name = f"evil{ESC}"
    (d / f"{name}.toml").write_text(str(source))
    env = {"DS_WIZARD_PRESET_PATH": str(d)}
    runner = CliRunner(env=env)
    for args in (["plan", "--preset", name, "--num-gpus", "2", "--gpu-memory", "80GiB"],
                 ["presets", "show", name], ["presets", "list"], ["presets", "list", "--json"],
                 ["generate", "--preset", name, "--gpus", "2", "--out-dir", str(tmp_path)],
                 ["launch", "--preset", name, "--num-gpus", "2", "--dry-run"],
                 ["--auto", "--preset", name, "--num-gpus", "2", "--dry-run"]):
        result = runner.invoke(main, args)
        assert "\x1b" not in result.stdout + result.stderr, args
        assert "\x07" not in result.stdout + result.stderr, args


def test_an_unknown_key_with_an_escape_prints_no_escape(tmp_path: Path) -> None:
    cfg = cfg_file(tmp_path, {**CONFIG, "bf16": {f"x{ESC}": 1}, f"k{ESC}": 2})
    result = CliRunner().invoke(main, ["check", str(cfg), "--num-gpus", "2"])
    assert "\x1b" not in result.stdout + result.stderr
    result = CliRunner().invoke(main, ["check", str(cfg), "--num-gpus", "2", "--json"])
    assert "\x1b" not in result.stdout and "\\u001b" in result.stdout


def test_explain_quotes_a_log_line_without_its_escape(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text(f"{ESC}\x1b[2Jworld_size 16 != 1 * 1 * 1 \u202e\x9b31m\n")
    result = CliRunner().invoke(main, ["explain", str(log)])
    assert "DeepSpeed said:" in result.stdout
    for bad in ("\x1b", "\x07", "\u202e", "\x9b"):
        assert bad not in result.stdout


def test_json_and_export_escape_c1_and_bidi(home: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(main, ["presets", "new", "sneaky", "--from", "tiny_mamba", "--set",
                                'description="a\u009bb\u202ec"'])
    assert made.exit_code == 0, made.output
    for args in (["presets", "export", "sneaky"], ["presets", "list", "--json"],
                 ["presets", "show", "sneaky"]):
        out = runner.invoke(main, args).stdout
        assert "\u009b" not in out and "\u202e" not in out, args
    exported = runner.invoke(main, ["presets", "export", "sneaky"]).stdout
    assert "\\u009b" in exported and "\\u202e" in exported  # escaped, not lost
    listed = json.loads(runner.invoke(main, ["presets", "list", "--json"]).stdout)
    (mine,) = [p for p in listed["presets"] if p["name"] == "sneaky"]
    assert mine["description"].startswith("a\u009bb\u202ec")  # the JSON reads back as written


# ------------------------------------------------------------- 4. no wrong "valid"


@pytest.mark.parametrize("extra,error", [
    ({"wall_clock_breakdown": "yes"}, "TypeError"),
    ({"optimizer": {"type": 1099511627776}}, "AttributeError"),
])
def test_plain_code_values_are_not_valid(extra: dict, error: str, tmp_path: Path) -> None:
    cfg = cfg_file(tmp_path, {**CONFIG, **extra})
    result = CliRunner().invoke(main, ["check", str(cfg), "--num-gpus", "2"])
    assert result.exit_code == 1 and error in result.stdout, result.output
    assert "checked by DeepSpeed" in result.stdout  # it says why it asked DeepSpeed
    launch = CliRunner().invoke(main, ["launch", *TINY, "--config", str(cfg), "--num-gpus",
                                       "2", "--dry-run"])
    assert error in one_error(launch)


def test_deep_nesting_is_refused_and_fix_writes_nothing(tmp_path: Path) -> None:
    cfg = cfg_file(tmp_path, '{"train_batch_size": 7, "x": ' + "[" * 500 + "]" * 500 + "}")
    before = cfg.read_bytes()
    for args in (["check", str(cfg), "--num-gpus", "2"], ["fix", str(cfg), "--num-gpus", "2"],
                 ["launch", *TINY, "--config", str(cfg), "--num-gpus", "2", "--dry-run"]):
        assert "nests more than" in one_error(CliRunner().invoke(main, args))
    assert cfg.read_bytes() == before
    assert not (tmp_path / "ds.json.bak").exists()


# ------------------------------------------------------------- 5. tracebacks


@pytest.mark.parametrize("args", [["check", "{c}", "--num-gpus", "2"],
                                  ["fix", "{c}", "--num-gpus", "2"],
                                  ["launch", *TINY, "--config", "{c}", "--dry-run"]])
def test_truncated_comment_is_one_line(args: list[str], tmp_path: Path) -> None:
    cfg = cfg_file(tmp_path, "{/*")
    one_error(CliRunner().invoke(main, [a.format(c=cfg) for a in args]))


def test_negative_sequence_parallel_size_is_no_traceback(tmp_path: Path) -> None:
    cfg = cfg_file(tmp_path, {"train_batch_size": 8, "sequence_parallel_size": -1})
    for cmd in ("check", "fix"):
        result = CliRunner().invoke(main, [cmd, str(cfg), "--num-gpus", "2"])
        assert (result.exit_code == 1 and result.exception is None) or \
            isinstance(result.exception, SystemExit), result.output


@pytest.mark.parametrize("line", ["world_size -16 != -4 * -2 * 0",
                                  "world_size 16 != 4 * 2 * " + "9" * 400],
                         ids=["zero-world", "400-nines"])
def test_explain_odd_numbers_are_no_traceback(line: str) -> None:
    result = CliRunner().invoke(main, ["explain", line])
    assert result.exit_code in (0, 1) and (result.exception is None
                                           or isinstance(result.exception, SystemExit))


def test_non_object_block_under_hf_is_no_traceback(tmp_path: Path) -> None:
    cfg = cfg_file(tmp_path, {**CONFIG, "fp16": 3, "optimizer": 2})
    result = CliRunner().invoke(main, ["check", str(cfg), "--num-gpus", "2", "--hf",
                                       "per_device_train_batch_size=2"])
    assert result.exit_code == 1 and "fp16" in result.stdout
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_optimizer_params_not_an_object_under_launch(tmp_path: Path) -> None:
    cfg = cfg_file(tmp_path, {**CONFIG, "optimizer": {"type": "AdamW", "params": -1}})
    one_error(CliRunner().invoke(main, ["launch", *TINY, "--config", str(cfg), "--num-gpus",
                                        "2", "--dry-run"]))


# ------------------------------------------------------------- 6. smaller breaks


def test_explain_is_linear_in_a_digit_run() -> None:
    # quadratic scanning took 59 s for 80k digits; a million must still end at once
    code = ("from ds_wizard.core.check.explain import explain\n"
            "explain('16 != 4 * 2 * ' + '9' * 1_000_000 + ' ' + '7' * 1_000_000)\n"
            "explain(' ' * 1_000_000 + '1' + ' ' * 1_000_000)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_explain_knows_a_true_equation() -> None:
    result = CliRunner().invoke(main, ["explain", "world_size 16 != 4 * 2 * 2"])
    assert result.exit_code == 1
    assert "is true" in result.stdout and "hides GPUs" not in result.stdout


def test_explain_config_that_cannot_be_read_is_an_error(tmp_path: Path) -> None:
    line = one_error(CliRunner().invoke(main, ["explain", "world_size 16 != 1 * 1 * 1",
                                               "--config", str(tmp_path / "nope.json")]))
    assert "nope.json" in line


@pytest.mark.parametrize("value", ["0x10", "1_000", "0o10", "0b11", "9" * 50],
                         ids=["hex", "underscore", "octal", "binary", "50-digits"])
def test_set_refuses_other_number_spellings(value: str) -> None:
    line = one_error(CliRunner().invoke(main, ["plan", *TINY, "--num-gpus", "2",
                                               "--gpu-memory", "80GiB", "--set",
                                               f"model.n_layer={value}"]))
    assert "decimal" in line or "digits" in line


def test_preset_file_refuses_other_number_spellings(tmp_path: Path) -> None:
    text = CliRunner().invoke(main, ["presets", "export", "tiny_mamba"]).stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(re.sub(r"n_layer = \d+", "n_layer = 0x2", text))
    assert "n_layer = 0x2" in bad.read_text()
    result = CliRunner().invoke(main, ["presets", "validate", str(bad)])
    assert result.exit_code == 1 and "'0x2' is not a decimal number" in result.stdout
    line = one_error(CliRunner().invoke(main, ["plan", "--preset", str(bad), "--num-gpus", "2",
                                               "--gpu-memory", "80GiB"]))
    assert "decimal" in line


def test_presets_new_with_a_newline_names_no_missing_file(home: Path) -> None:
    line = one_error(CliRunner().invoke(main, ["presets", "new", "nl", "--from", "tiny_mamba",
                                               "--set", "description=x\nline"]))
    assert "line break" in line and ".toml" not in line


def test_library_warnings_never_precede_the_error(tmp_path: Path) -> None:
    # in a fresh process, where DeepSpeed is imported for the first time
    cfg = cfg_file(tmp_path, {**CONFIG, "wall_clock_breakdown": "yes"})
    for args in (["check", "--deep", str(cfg), "--num-gpus", "2"],
                 ["fix", str(cfg), "--num-gpus", "3"],
                 ["launch", *TINY, "--slurm", "--num-nodes", "2", "--gpus-per-node", "1",
                  "--config", str(cfg), "--runs-dir", str(tmp_path / "runs")]):
        proc = subprocess.run([sys.executable, "-m", "ds_wizard.cli", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        assert "Setting accelerator" not in proc.stdout + proc.stderr, args
        assert "[WARNING]" not in proc.stderr, args
        assert proc.stderr.count("error:") <= 1, proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_refused_resume_prints_once_and_keeps_command_txt(prepared_run: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """The run's supervisor refuses (another one holds the run's lock): one error line,
    and the run's command.txt is the one of the launch that ran, unchanged."""
    import ds_wizard.launch.client
    from ds_wizard.launch.supervisor import acquire_run_lock

    runs = tmp_path / "runs"
    runs.mkdir()
    run = runs / prepared_run.name
    subprocess.run(["cp", "-a", str(prepared_run), str(run)], check=True)
    tag = run / rundir.CHECKPOINTS / "global_step2"
    tag.mkdir()
    (tag / "mp_rank_00_model_states.pt").write_bytes(b"weights")
    rundir.write_marker(run / rundir.CHECKPOINTS, "global_step2", 2, {})
    (run / rundir.CHECKPOINTS / "latest").write_text("global_step2")
    before = (run / rundir.COMMAND_TXT).read_bytes()
    # the client's own check passes (a race: the other holder came after it looked)
    monkeypatch.setattr(ds_wizard.launch.client, "refuse_if_running", lambda run_dir: None)
    fd = acquire_run_lock(run, "a test holding the lock")
    try:
        result = CliRunner().invoke(main, ["launch", "--resume", run.name, "--runs-dir",
                                           str(runs), "--steps", "5"])
    finally:
        os.close(fd)
    assert result.exit_code != 0, result.output
    assert len([ln for ln in result.stderr.splitlines() if "error:" in ln]) == 1, \
        result.stderr
    assert (run / rundir.COMMAND_TXT).read_bytes() == before
