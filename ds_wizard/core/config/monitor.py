"""The trackers of a run, as DeepSpeed's own ``monitor`` config keys (issue 22).

ds-wizard never logs to TensorBoard, CSV or W&B itself: it writes DeepSpeed's
``tensorboard`` / ``csv_monitor`` / ``wandb`` blocks, and each rank's engine builds its
``MonitorMaster`` from them. ds-wizard's own scalars (tokens/s, MFU, peak memory, the batch
triple) go through that same monitor's ``write_events`` from rank 0 (``train/tracking.py``).

    cfg = with_trackers(cfg, ("tensorboard", "csv"), job_name="tiny-…")   # --auto, generate
    cfg = place_trackers(cfg, run_dir)               # launch: output under the run directory
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ds_wizard.core.base.errors import DsWizardError

# ds-wizard's name → DeepSpeed's config block
BLOCKS = {"tensorboard": "tensorboard", "csv": "csv_monitor", "wandb": "wandb"}
TRACKERS = tuple(BLOCKS)
# the blocks that write files: their output_path/job_name (DeepSpeed: output_path/job_name/)
FILE_BLOCKS = ("tensorboard", "csv_monitor")
# the run directory's subdirectory for each tracker's files
SUBDIRS = {"tensorboard": "tensorboard", "csv_monitor": "csv", "wandb": "wandb"}
NONE = "none"


def parse_trackers(text: str) -> tuple[str, ...]:
    """``--monitor tensorboard,csv`` → ("tensorboard", "csv"); ``none`` → ()."""
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if names == [NONE]:
        return ()
    bad = [n for n in names if n not in TRACKERS]
    if bad or not names:
        raise DsWizardError(f"--monitor {text!r}: unknown tracker {bad[0] if bad else '(empty)'!r}",
                            f"choose from {', '.join(TRACKERS)} (comma-separated), or none")
    out: list[str] = []
    for n in names:
        if n not in out:
            out.append(n)
    return tuple(out)


def monitor_set(trackers: Sequence[str]) -> str:
    """The ``--set`` override that carries ``--monitor`` into the preset (one door)."""
    return "monitor.trackers=[" + ", ".join(f'"{t}"' for t in trackers) + "]"


def with_trackers(cfg: dict[str, Any], trackers: Iterable[str], *, job_name: str,
                  output_root: str = "", wandb_project: str = "ds-wizard") -> dict[str, Any]:
    """``cfg`` with a DeepSpeed block for each tracker (enabled), others left as they are.

    ``output_root`` empty: DeepSpeed writes ``./<job_name>`` when the config is used on its
    own; ``ds-wizard launch`` moves it under the run directory (:func:`place_trackers`).
    """
    out = dict(cfg)
    for name in trackers:
        block = BLOCKS[name]
        if block in FILE_BLOCKS:
            path = f"{output_root.rstrip('/')}/{SUBDIRS[block]}" if output_root else ""
            out[block] = {"enabled": True, "output_path": path, "job_name": job_name}
        else:
            out[block] = {"enabled": True, "project": wandb_project, "group": job_name}
    return out


def enabled_blocks(cfg: dict[str, Any]) -> list[str]:
    """The monitor blocks ``cfg`` enables (DeepSpeed's names, comet included)."""
    return [b for b in (*BLOCKS.values(), "comet")
            if isinstance(cfg.get(b), dict) and cfg[b].get("enabled") is True]


def place_trackers(cfg: dict[str, Any], run_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """A launch's config: every enabled file tracker writes under ``run_dir`` with the run's
    name as job name, unless the user's config named a path of its own (kept, with a note)."""
    out, notes = dict(cfg), []
    for block in FILE_BLOCKS:
        if block not in enabled_blocks(cfg):
            continue
        given = dict(cfg[block])
        if given.get("output_path"):
            notes.append(f"{block}: writes to {given['output_path']} as the config says")
            continue
        given["output_path"] = str(run_dir / SUBDIRS[block])
        given["job_name"] = run_dir.name
        out[block] = given
    if "wandb" in enabled_blocks(cfg):
        w = dict(cfg["wandb"])
        w.setdefault("group", run_dir.name)
        if not w.get("group"):
            w["group"] = run_dir.name
        out["wandb"] = w
    return out, notes


def tracker_dirs(cfg: dict[str, Any], run_dir: Path | None = None) -> dict[str, str]:
    """Tracker → the directory its files land in (what ``runs --json`` and state.json say)."""
    out: dict[str, str] = {}
    for block in FILE_BLOCKS:
        if block in enabled_blocks(cfg):
            b = cfg[block]
            out[SUBDIRS[block]] = str(Path(b.get("output_path") or ".") /
                                      str(b.get("job_name", "DeepSpeedJobName")))
    if "wandb" in enabled_blocks(cfg):
        out["wandb"] = str(run_dir / SUBDIRS["wandb"]) if run_dir is not None else "wandb"
    return out


def wandb_env(run_dir: Path, environ: dict[str, str]) -> dict[str, str]:
    """W&B stays offline with its files in the run directory, unless the user's environment
    already says where and how (WANDB_MODE, WANDB_DIR, WANDB_API_KEY)."""
    env = {"WANDB_NAME": run_dir.name}
    if "WANDB_MODE" not in environ and "WANDB_API_KEY" not in environ:
        env["WANDB_MODE"] = "offline"
    if "WANDB_DIR" not in environ:
        env["WANDB_DIR"] = str(run_dir / SUBDIRS["wandb"])
    return env


def view_commands(cfg: dict[str, Any]) -> list[str]:
    """How to look at the curves, one line per tracker that writes locally."""
    lines = []
    if "tensorboard" in enabled_blocks(cfg):
        b = cfg["tensorboard"]
        root = b.get("output_path") or "."
        lines.append(f"tensorboard --logdir {shlex.quote(str(root))}")
    if "csv_monitor" in enabled_blocks(cfg):
        b = cfg["csv_monitor"]
        where = Path(b.get("output_path") or ".") / str(b.get("job_name", "DeepSpeedJobName"))
        lines.append(f"ls {shlex.quote(str(where))}  # one CSV file per scalar")
    if "wandb" in enabled_blocks(cfg):
        lines.append("wandb sync <run dir>/wandb/offline-run-*  # when offline")
    return lines
