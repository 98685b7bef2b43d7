"""``ds-wizard explain`` on DeepSpeed errors as users paste them.

The cases follow the shapes of real issue threads, written here from DeepSpeed 0.19's own
messages (``runtime/config.py``) and transformers' mismatch error, each with the diagnosis a
maintainer would give.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from fakes import run_cli

from ds_wizard.cli import main
from ds_wizard.core.check.explain import explain

MISMATCH = ("AssertionError: Check batch related parameters. train_batch_size is not equal to "
            "micro_batch_per_gpu * gradient_acc_step * world_size {}")


def test_mpirun_world_size_one():
    log = ("$ mpirun -np 16 python pretrain.py --deepspeed_config configs/ds_z2.json\n"
           "[rank0]: Traceback (most recent call last):\n"
           f"[rank0]: {MISMATCH.format('16 != 1 * 1 * 1')}\n")
    out = explain(log)
    assert out.world_size == 1 and out.triplet == (16, 1, 1)
    assert out.causes[0].startswith("launched under mpirun")
    assert out.intended_world_size == 16
    assert out.fix_command.startswith("ds-wizard fix configs/ds_z2.json --num-gpus 16")


def test_python_instead_of_launcher():
    out = explain(MISMATCH.format("128 != 4 * 8 * 1"))
    assert out.causes[0].startswith("launched with `python script.py` instead of a distributed")
    assert out.intended_world_size == 4


def test_seven_ranks_global_batch_does_not_divide():
    out = explain(MISMATCH.format("256 != 2 * 18 * 7"), config="ds.json")
    assert out.world_size == 7 and out.triplet == (256, 2, 18)
    assert "does not divide" in out.causes[0]
    assert out.fix_command == "ds-wizard fix ds.json --num-gpus 7 --keep micro"


def test_micro_batch_rounded_to_zero_on_eight_gpus():
    log = ("deepspeed --num_gpus 8 train.py --deepspeed_config ds.json\n"
           "dist_world_size=8\n"
           "AssertionError: Micro batch size per gpu: 0 has to be greater than 0\n")
    out = explain(log)
    assert out.causes[0].startswith("micro-batch rounded to 0")
    assert "8 rank(s)" in out.causes[0]
    assert out.fix_command == "ds-wizard fix ds.json --num-gpus 8 --keep micro"


def test_cuda_visible_devices_hides_gpus():
    log = ("CUDA_VISIBLE_DEVICES=0,1\n"
           f"{MISMATCH.format('64 != 8 * 2 * 2')}\n")
    out = explain(log, config="ds.json")
    assert out.causes[0].startswith("CUDA_VISIBLE_DEVICES=0,1 hides GPUs")
    assert out.intended_world_size == 4


def test_hf_per_device_batch_disagrees():
    log = ("ValueError: Please correct the following DeepSpeed config values that mismatch "
           "TrainingArguments values:\n"
           "- ds train_micro_batch_size_per_gpu=8 vs hf per_device_train_batch_size=4\n"
           "- ds train_batch_size=64 vs hf train_batch_size (calculated)=32\n"
           "The easiest method is to set these DeepSpeed config values to 'auto'.\n")
    out = explain(log, config="ds.json", num_gpus=8)
    assert out.causes[0].startswith("HF Trainer: per_device_train_batch_size=4 disagrees")
    assert out.fix_command == ("ds-wizard fix ds.json --num-gpus 8 "
                               "--hf per_device_train_batch_size=4")


def test_nothing_found_exits_1():
    result = CliRunner().invoke(main, ["explain", "RuntimeError: CUDA out of memory"])
    assert result.exit_code == 1 and "no DeepSpeed batch-size error" in result.output


def test_cli_log_file_stdin_and_json(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("noise\n" + MISMATCH.format("256 != 2 * 18 * 7") + "\nmore noise\n")
    by_file = CliRunner().invoke(main, ["explain", str(log), "--json"])
    data = json.loads(by_file.stdout)
    assert by_file.exit_code == 0 and data["world_size"] == 7
    proc = run_cli("explain", "-", input=log.read_text(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "world size DeepSpeed saw: 7" in proc.stdout
    fix_line = proc.stdout.splitlines()[-1].strip()
    assert fix_line.startswith("ds-wizard fix ")


@pytest.mark.parametrize("message", [MISMATCH.format("16 != 1 * 1 * 1"),
                                     MISMATCH.format("256 != 2 * 18 * 7")])
def test_suggested_fix_command_runs(tmp_path, message):
    """The printed command is a real command line: run it on a config that produced the
    error, and DeepSpeed's own check accepts the result."""
    t, m, g = (int(x) for x in message.split("world_size ")[1].replace("!=", "*")
               .split("*")[:3])
    cfg = tmp_path / "ds.json"
    cfg.write_text(json.dumps({"train_batch_size": t, "train_micro_batch_size_per_gpu": m,
                               "gradient_accumulation_steps": g}))
    command = explain(message, config=str(cfg)).fix_command.split("#")[0].split()
    assert command[:2] == ["ds-wizard", "fix"]
    result = CliRunner().invoke(main, command[1:])
    assert result.exit_code == 0, result.output
    assert "deep check: DeepSpeed" in result.output and "accepts" in result.output


def test_neither_batch_key():
    out = explain("AssertionError: Either train_batch_size or train_micro_batch_size_per_gpu "
                  "needs to be provided")
    assert out.found and "neither" in out.causes[0] and out.fix_command is None


def test_zero_global_batch():
    out = explain("AssertionError: Train batch size: 0 has to be greater than 0",
                  config="ds.json", num_gpus=2)
    assert out.found and "at least 1" in out.causes[0]
    assert out.fix_command == "ds-wizard fix ds.json --num-gpus 2"
