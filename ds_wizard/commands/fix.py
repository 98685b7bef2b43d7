"""``ds-wizard fix CONFIG``: repair the batch triplet in place, as a minimal textual edit."""

from __future__ import annotations

from pathlib import Path

import click

from ds_wizard.commands.check_options import (
    hf_options,
    refuse_as_json,
    sequence_parallel_flag,
    strict_option,
)
from ds_wizard.commands.render import echo_json, echo_lines
from ds_wizard.commands.worldsize import resolve_world_size, world_size_options
from ds_wizard.core.base.errors import DsWizardError, ExitCode
from ds_wizard.core.config.repair import repair_file
from ds_wizard.deepcheck import deep_check


@click.command("fix")
@click.argument("config", type=click.Path(path_type=Path), metavar="CONFIG")
@world_size_options
@click.option("--keep", type=click.Choice(["micro", "global"]), default="micro",
              show_default=True,
              help="micro: keep micro-batch and accumulation, recompute train_batch_size. "
                   "global: keep train_batch_size, choose micro-batch and accumulation.")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Write the repaired config here instead of over CONFIG.")
@click.option("--dry-run", is_flag=True, help="Show the change, write nothing.")
@strict_option
@hf_options
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report.")
def fix(config: Path, num_gpus: int | None, tp: int, pp: int, sp: int, keep: str,
        output: Path | None, dry_run: bool, strict: bool = False, hf: str | None = None,
        hf_args: Path | None = None, as_json: bool = False) -> None:
    """Repair train_batch_size / micro-batch / gradient accumulation for N GPUs.

    Only the changed values are edited in the file's text: comments, trailing
    commas, key order and every other line stay as they were, so `git diff`
    shows just the new numbers. The file is replaced atomically and the previous
    version is kept as CONFIG.bak. Running it again on a fixed file changes
    nothing. It ends with the deep check: DeepSpeed's own DeepSpeedConfig on
    the result, at this world size.

    With --hf (HF Trainer mode) it writes the numbers the Trainer needs, or
    leaves "auto" where the Trainer fills it in correctly, and says which.

    Exit status: 0 fixed or nothing to fix, 1 cannot fix (or problems other
    than the batch remain, see `ds-wizard check`), 2 usage error.

    \b
    Examples:
      ds-wizard fix deepspeed_config.json --num-gpus 4          # 16/4/8 -> 128
      ds-wizard fix ds.json --num-gpus 8 --keep global          # keep 128, re-split
      ds-wizard fix ds.json --num-gpus 4 -o deepspeed_4gpu.json # leave ds.json alone
      ds-wizard fix ds.json --num-gpus 4 --hf per_device_train_batch_size=4
    """
    try:
        done = repair_file(config, resolve_world_size(num_gpus, tp, pp, sp), keep=keep,
                           output=output, dry_run=dry_run, strict=strict, sp=sp,
                           sp_flag=sequence_parallel_flag(sp), hf=hf, hf_args=hf_args,
                           deep=deep_check)
    except DsWizardError as exc:
        # scripts reading --json still get an object saying why
        refuse_as_json(exc, as_json, {"config": str(config), "valid": False, "written": None,
                                      "errors": [exc.one_line()]})
    if as_json:
        echo_json(done.as_dict())
    else:
        echo_lines(done.lines())
    click.get_current_context().exit(ExitCode.OK if done.valid else ExitCode.PROBLEM)
