"""Run ds_wizard.train's start-up (process group → device → model → engine) in one real
CPU rank, with a recording accelerator, then three steps with a checkpoint save after each
that takes SAVE_SECONDS; print what happened in order as JSON.

    python tests/rank_scripts/record_startup.py RUN_DIR   (env: RANK, LOCAL_RANK, ...)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import deepspeed
import deepspeed.accelerator as ds_accel
from deepspeed.accelerator.cpu_accelerator import CPU_Accelerator

from ds_wizard.train import loop
from ds_wizard.train import model as models

EVENTS: list[list] = []
SAVE_SECONDS = 3.0


class RecordingCPU(CPU_Accelerator):
    """DeepSpeed's CPU accelerator, noting every device selection."""

    def set_device(self, device_index):  # type: ignore[no-untyped-def]
        EVENTS.append(["set_device", int(device_index)])
        return super().set_device(device_index)


def _wrap(owner, name):  # type: ignore[no-untyped-def]
    real = getattr(owner, name)

    def run(*args, **kwargs):  # type: ignore[no-untyped-def]
        EVENTS.append([name])
        return real(*args, **kwargs)

    setattr(owner, name, run)


def main() -> int:
    run_dir = Path(sys.argv[1])
    ds_accel.set_accelerator(RecordingCPU())
    _wrap(deepspeed, "init_distributed")
    _wrap(models, "build_model")
    _wrap(deepspeed, "initialize")
    args = loop.parse_args(["--run-dir", str(run_dir), "--preset", str(run_dir / "preset.toml"),
                            "--deepspeed_config", str(run_dir / "ds_config.json"),
                            "--steps", "3", "--set", "train.save_every=1"])
    trainer = loop.Trainer(args)
    trainer._setup()
    trainer._build()
    groups = [{"weight_decay": g["weight_decay"], "numel": sum(p.numel() for p in g["params"])}
              for g in trainer.engine.optimizer.param_groups]

    def slow_save(self, engine, samples, paths, prog, t_start, tdist):  # type: ignore[no-untyped-def]
        time.sleep(SAVE_SECONDS)  # a checkpoint save that takes a while (nothing written)
        prog.last_saved = prog.step

    loop.Trainer._save = slow_save
    trainer._train_steps(loop.Progress())
    print("RESULT " + json.dumps({"events": EVENTS, "device": trainer.device_name,
                                  "groups": groups, "save_seconds": SAVE_SECONDS}), flush=True)
    trainer.tdist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
