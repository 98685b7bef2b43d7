"""A multi-node run prepared but not started (``generate --hostfile/--slurm``): its run
directory is created as ``launch`` would, and its scripts are copied where the user asked."""

from __future__ import annotations

from pathlib import Path

from ds_wizard.core.base.fsio import atomic_write_text, read_text
from ds_wizard.launch.plan import LaunchRequest, prepare_run, scripts_text


def prepare_scripts(request: LaunchRequest, out_dir: Path) -> list[str]:
    """Prepare the run of ``request`` (nothing starts) and copy its launch script (and
    sbatch script) into ``out_dir``, executable; the lines that say what was written."""
    plan = prepare_run(request)
    scripts = [plan.paths.script] + ([plan.sbatch] if plan.sbatch is not None else [])
    for script in scripts:
        copy = out_dir / script.name
        atomic_write_text(copy, read_text(script, limit=1 << 20, what="launch script"))
        copy.chmod(0o755)
    return ["", *scripts_text(plan)[-2:],
            f"📝 copied {', '.join(s.name for s in scripts)} to {out_dir}"]
