"""Issue 22 on the command line: `--monitor` on `--auto`, `generate` and `launch`, and
`--stall-after` refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

from _ds_oracle import deepspeed_verdict

from ds_wizard.cli import main


def test_auto_and_generate_write_deepspeeds_monitor_blocks(runner, tmp_path: Path) -> None:
    out = tmp_path / "auto.json"
    result = runner.invoke(main, ["--auto", "--num-gpus", "2", "--preset", "tiny_mamba",
                                  "--monitor", "tensorboard,csv", "--output", str(out)])
    assert result.exit_code == 0, result.output
    cfg = json.loads(out.read_text())
    assert cfg["tensorboard"]["enabled"] and cfg["csv_monitor"]["enabled"]
    assert deepspeed_verdict(cfg, 2).valid
    result = runner.invoke(main, ["generate", "--preset", "tiny_mamba", "--gpus", "2",
                                  "--monitor", "csv", "--out-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    gen = json.loads((tmp_path / "deepspeed_2gpu.json").read_text())
    assert gen["csv_monitor"]["enabled"] and "tensorboard" not in gen


def test_bad_tracker_and_stall_rule_are_one_line_errors(runner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["--auto", "--num-gpus", "2", "--preset", "tiny_mamba",
                                  "--monitor", "tensorbaord", "--output",
                                  str(tmp_path / "x.json")])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert lines == ["error: --monitor 'tensorbaord': unknown tracker 'tensorbaord' (choose "
                     "from tensorboard, csv, wandb (comma-separated), or none)"]
    result = runner.invoke(main, ["launch", "--preset", "tiny_mamba", "--runs-dir",
                                  str(tmp_path / "runs"), "--stall-after", "soon",
                                  "--no-doctor"])
    assert result.exit_code != 0
    assert result.output.strip().splitlines()[-1].startswith(
        "error: --stall-after 'soon' is not a stall rule")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
