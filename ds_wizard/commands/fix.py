"""``ds-wizard fix CONFIG``: repair the batch triplet in place, atomically, with a backup."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ds_wizard.commands.worldsize import resolve_world_size, world_size_options
from ds_wizard.core.checker import (
    BATCH_KEYS,
    check_config,
    fix_config,
    load_config_file,
    read_batch_value,
)
from ds_wizard.core.fsio import atomic_write_text


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
def fix(config: Path, num_gpus: int | None, tp: int, pp: int, sp: int, keep: str,
        output: Path | None, dry_run: bool) -> None:
    """Repair train_batch_size / micro-batch / gradient accumulation for N GPUs.

    Every other key and the key order are kept. The file is replaced atomically
    and the previous version is kept as CONFIG.bak. Running it again on a fixed
    file changes nothing.

    Exit status: 0 fixed or nothing to fix, 1 cannot fix (or problems other
    than the batch remain, see `ds-wizard check`), 2 usage error.

    \b
    Examples:
      ds-wizard fix deepspeed_config.json --num-gpus 4          # 16/4/8 -> 128
      ds-wizard fix ds.json --num-gpus 8 --keep global          # keep 128, re-split
      ds-wizard fix ds.json --num-gpus 4 -o deepspeed_4gpu.json # leave ds.json alone
    """
    from ds_wizard.core.dsconfig import dumps

    cfg = load_config_file(config)
    ws = resolve_world_size(num_gpus, tp, pp, sp)
    new_cfg, before, after = fix_config(cfg, ws.data_parallel, keep=keep)  # type: ignore[arg-type]
    target = output or config
    if dumps(new_cfg) == dumps(cfg):
        click.echo(f"✅ nothing to fix: the batch triplet in {config} is valid for "
                   f"{ws.describe()}: {after.formula}")
        _exit_on_other_problems(new_cfg, ws.data_parallel, config)
        return
    kept = ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps") if keep == "micro" \
        else ("train_batch_size",)
    click.echo(f"fixing {config} for {ws.describe()}, keeping "
               + ("micro-batch and accumulation" if keep == "micro" else "train_batch_size"))
    for key in BATCH_KEYS:
        old, new = _shown(cfg, key), _shown(new_cfg, key)
        if old == new:
            click.echo(f"  {key:<31} {old}" + ("  (kept)" if key in kept else ""))
        else:
            click.echo(f"  {key:<31} {old} → {new}")
    if before.error:
        click.echo(f"before: {before.formula or 'incomplete'}   ✗ DeepSpeed: {before.error}")
    else:
        odd = [v for v in (read_batch_value(cfg, k) for k in BATCH_KEYS) if v.problem]
        click.echo("before: ✗ not usable as written: "
                   + ", ".join(f"{v.key}={json.dumps(v.raw)}" for v in odd))
    click.echo(f"after:  {after.formula}   ✅")
    if dry_run:
        click.echo(f"dry run: {target} not written")
        return
    backup = atomic_write_text(target, dumps(new_cfg), backup=True)
    click.echo(f"wrote {target}" + (f" (previous version: {backup})" if backup else ""))
    _exit_on_other_problems(new_cfg, ws.data_parallel, target)


def _shown(cfg: dict[str, Any], key: str) -> str:
    return json.dumps(cfg[key]) if key in cfg else "(missing)"


def _exit_on_other_problems(cfg: dict[str, Any], world_size: int, path: Path) -> None:
    """fix repairs the batch only; anything else still wrong makes the exit status 1, so
    ``ds-wizard fix ds.json && deepspeed ...`` does not launch a config that will fail."""
    others = check_config(cfg, world_size).errors
    if others:
        click.echo(f"✗ {len(others)} other problem(s) remain, which fix does not change "
                   f"(see `ds-wizard check {path}`):")
        for e in others:
            click.echo(f"  ✗ {e}")
        click.get_current_context().exit(1)
