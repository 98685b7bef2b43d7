"""``ds-wizard check CONFIG``: DeepSpeed's verdict on a config file, before any launch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ds_wizard.commands.check_options import (
    hf_options,
    refuse_as_json,
    sequence_parallel_flag,
    strict_option,
)
from ds_wizard.commands.common import resolve_preset
from ds_wizard.commands.render import echo_json, echo_lines
from ds_wizard.commands.worldsize import resolve_world_size, world_size_options
from ds_wizard.core.base.errors import ConfigFileError, ExitCode
from ds_wizard.core.config.filecheck import check_file

if TYPE_CHECKING:
    from ds_wizard.core.config.filecheck import DeepCheck


@click.command("check")
@click.argument("config", type=click.Path(path_type=Path), metavar="CONFIG")
@world_size_options
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report.")
@strict_option
@click.option("--deep", is_flag=True,
              help="Also run DeepSpeed's own DeepSpeedConfig on the file, in-process, with "
                   "the world size set (imports DeepSpeed: a few seconds).")
@hf_options
@click.option("--preset", "preset_ref", default=None, metavar="NAME|PATH",
              help="The model the config trains: adds a per-GPU memory check.")
@click.option("--gpu-memory", default=None, metavar="SIZE",
              help="Memory of one GPU for the memory check (80GiB, 24G). "
                   "Default: the smallest detected GPU.")
def check(config: Path, num_gpus: int | None, tp: int, pp: int, sp: int, as_json: bool,
          strict: bool = False, deep: bool = False, hf: str | None = None,
          hf_args: Path | None = None, preset_ref: str | None = None,
          gpu_memory: str | None = None) -> None:
    """Check a DeepSpeed config the way DeepSpeed will, without starting it.

    The verdict is DeepSpeed's own for the whole file, at the DeepSpeed version
    ds-wizard's schema was derived from: the batch triplet (with the resolved
    values and the formula), every key and value of the ZeRO, fp16/bf16,
    monitor and other blocks, removed keys, sequence_parallel_size. Files may
    have // comments and trailing commas, as DeepSpeed reads them with hjson.

    Where ds-wizard knows better than DeepSpeed it warns: keys DeepSpeed
    ignores, "auto" it silently turns into a default, numbers it accepts but
    should not. Warnings never change the exit status unless --strict.

    Exit status: 0 valid, 1 problems found, 2 usage error.

    \b
    Examples:
      ds-wizard check deepspeed_config.json --num-gpus 4
      ds-wizard check ds.json --num-gpus 16 --tp 2     # data-parallel size 8
      ds-wizard check ds.json --num-gpus 8 --strict --deep
      ds-wizard check ds_zero3_auto.json --num-gpus 4 --hf per_device_train_batch_size=4
      ds-wizard check ds.json --json | jq .errors
    """
    if preset_ref is None and gpu_memory is not None:
        raise click.UsageError("--gpu-memory needs --preset (the model to estimate)")
    world = resolve_world_size(num_gpus, tp, pp, sp)
    try:
        done = check_file(config, world, sp=sp, sp_flag=sequence_parallel_flag(sp),
                          strict=strict, hf=hf, hf_args=hf_args, gpu_memory=gpu_memory,
                          spec=resolve_preset(preset_ref).spec if preset_ref else None,
                          deep=_deep_check() if deep else None, settle=_deep_check())
    except ConfigFileError as exc:
        # scripts reading --json still get an object saying why
        refuse_as_json(exc, as_json, {"valid": False, "config": str(config),
                                      "errors": [exc.one_line()], "warnings": []})
    if as_json:
        echo_json(done.as_dict())
    else:
        echo_lines(done.lines())
    click.get_current_context().exit(ExitCode.OK if done.valid else ExitCode.PROBLEM)


def _deep_check() -> DeepCheck:
    from ds_wizard.deepcheck import deep_check

    return deep_check
