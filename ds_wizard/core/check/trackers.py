"""What ``check`` adds to DeepSpeed's own verdict on the monitor blocks: an output path
the training job could not write is an error before launch, not a crash in rank 0 after
minutes of start-up (DeepSpeed's ``MonitorMaster`` makes the directory in the engine's
constructor). Misspelled keys are DeepSpeed's own verdict (``dsschema``, block
``(monitor)``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ds_wizard.core.check import dsschema

# DeepSpeed's monitor blocks that write files under output_path/job_name
FILE_BLOCKS = ("tensorboard", "csv_monitor")


def unwritable_reason(path: Path) -> str | None:
    """Why ``path`` (a directory to be created) could not be written, or None."""
    p = path.expanduser()
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            return "no part of it exists"
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None


def tracker_findings(cfg: dict[str, Any]) -> list[dsschema.Finding]:
    """An error for each enabled file tracker whose output directory cannot be made."""
    out = []
    for block in FILE_BLOCKS:
        b = cfg.get(block)
        if not isinstance(b, dict) or b.get("enabled") is not True:
            continue
        root = b.get("output_path")
        if not isinstance(root, str) or not isinstance(b.get("job_name", ""), str):
            continue  # a wrong type is DeepSpeed's own verdict
        target = Path(root or ".") / str(b.get("job_name", "DeepSpeedJobName"))
        reason = unwritable_reason(target)
        if reason is not None:
            out.append(dsschema.Finding(
                "error", f"{block}.output_path",
                f"{block}.output_path {root!r}: rank 0 cannot create {target} ({reason}); "
                "point it at a writable directory", dsschema.ORDER_ERROR_CHECK + 1, "ds-wizard"))
    return out
