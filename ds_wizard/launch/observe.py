"""What a launch adds so the run can be watched (issue 22): the trackers' output under the
run directory, W&B kept offline there, and PyTorch's NCCL flight recorder on CUDA."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.config.monitor import enabled_blocks, wandb_env
from ds_wizard.core.runs.stall import StallPolicy, default_policy, parse_stall_after
from ds_wizard.launch.stall import flight_recorder_env
from ds_wizard.launch.stall_monitor import StallOptions

# the package each DeepSpeed monitor imports in rank 0 (deepspeed/monitor/utils.py)
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "comet": "comet_ml"}


def require_tracker_packages(cfg: dict[str, Any]) -> None:
    """Refuse before launch what rank 0 would crash on after minutes of start-up."""
    for block in enabled_blocks(cfg):
        module = PACKAGES.get(block)
        if module and importlib.util.find_spec(module) is None:
            flag = "csv" if block == "csv_monitor" else block
            raise DsWizardError(
                f"the {block} tracker needs the {module} package, which is not installed",
                f"pip install {module.replace('_', '-')}, or drop {flag} from --monitor")


def observe_env(cfg: dict[str, Any], run_dir: Path, accelerator: str,
                environ: dict[str, str] | None = None) -> tuple[dict[str, str], list[str]]:
    """The environment the ranks need to be watched, and notes for the summary: W&B kept
    offline with its files in the run directory, NCCL's flight recorder on CUDA."""
    environ = dict(os.environ) if environ is None else environ
    env: dict[str, str] = {}
    notes: list[str] = []
    if "wandb" in enabled_blocks(cfg):
        env.update(wandb_env(run_dir, environ))
        mode = env.get("WANDB_MODE") or environ.get("WANDB_MODE") or "online"
        where = env.get("WANDB_DIR") or environ.get("WANDB_DIR")
        notes.append(f"wandb: {mode}, files in {where}")
    if accelerator == "cuda":
        env.update(flight_recorder_env(run_dir, environ))
    return env, notes


def stall_options(stall_after: str | None, on_stall: str, accelerator: str,
                  ranks: int) -> StallOptions | None:
    """``--stall-after`` over the accelerator's default; None when turned off."""
    base: StallPolicy = default_policy(accelerator)
    policy = base if stall_after is None else parse_stall_after(stall_after, base)
    return None if policy is None else StallOptions(policy, on_stall, ranks)
