"""``ds-wizard generate``: one DeepSpeed config per GPU count, and the table of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import click

from ds_wizard.commands.common import preset_options, resolve_preset
from ds_wizard.commands.numbers import Count, parse_gpu_counts
from ds_wizard.core.errors import WriteError
from ds_wizard.core.fsio import FileChange, write_all
from ds_wizard.core.presets import DEFAULT_PRESET
from ds_wizard.core.schema import Precision

TABLE_HEADERS = ("GPUs", "micro_batch", "grad_acc", "train_batch_size", "config file")


def config_filename(num_gpus: int) -> str:
    return f"deepspeed_{num_gpus}gpu.json"


def render_table(rows: list[tuple[int, int, int, int, str]]) -> list[str]:
    """The source document's markdown table: each cell padded to its header's width."""
    widths = [len(h) for h in TABLE_HEADERS]

    def line(cells: tuple[object, ...]) -> str:
        padded = (f" {str(c).ljust(w)} " for c, w in zip(cells, widths, strict=True))
        return "|" + "|".join(padded) + "|"

    out = [line(TABLE_HEADERS), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in rows]
    return out


@click.command("generate")
@preset_options(default=DEFAULT_PRESET)
@click.option("--gpus", "gpu_counts", default="1,2,4,8", show_default=True,
              callback=parse_gpu_counts, metavar="N,N,...",
              help="Comma-separated GPU counts; one file per count.")
@click.option("--out-dir", type=click.Path(path_type=Path, file_okay=False), default=Path("."),
              show_default=True, help="Directory for the deepspeed_{N}gpu.json files.")
@click.option("--precision", type=click.Choice(get_args(Precision)), default="auto",
              show_default=True,
              help="auto: the preset's choice, bf16 where it says auto.")
@click.option("--zero-stage", type=Count(3, low=0), default=None,
              help="Override the preset's ZeRO stage.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def generate(preset_ref: str, sets: tuple[str, ...], gpu_counts: list[int], out_dir: Path,
             precision: str, zero_stage: int | None, as_json: bool) -> None:
    """Write deepspeed_{N}gpu.json for each GPU count and print the table.

    Files are written for the given counts, not for this machine: no GPU
    detection is involved, so the output is the same everywhere. An existing
    file with different content is kept as FILE.bak. All the files are written,
    or none is: each is staged first, then renamed into place.

    \b
    Examples:
      ds-wizard generate --preset 7b_mamba --gpus 1,2,4,8
      ds-wizard generate --preset mamba_1.4b --gpus 8,16 --out-dir configs/
      ds-wizard generate --preset tiny_mamba --gpus 2 --set batch.micro_batch=2
    """
    # imported here: the config builder and memory model are not needed for --help
    from ds_wizard.core.auto import auto_configure
    from ds_wizard.core.dsconfig import dumps

    preset = resolve_preset(preset_ref, sets)
    if not out_dir.is_dir():
        raise WriteError(f"output directory {out_dir} does not exist",
                         "create it first, or pass an existing --out-dir")
    results = []
    for n in gpu_counts:
        results.append((n, auto_configure(preset, n, precision=precision,
                                          zero_stage=zero_stage)))
    rows = []
    for n, result in results:
        c = result.choice
        rows.append((n, c.micro_batch, c.grad_accum, c.global_batch, config_filename(n)))
    changes = write_all([(out_dir / config_filename(n), dumps(result.config))
                         for n, result in results])
    if as_json:
        click.echo(json.dumps([
            {"gpus": n, "train_micro_batch_size_per_gpu": m, "gradient_accumulation_steps": g,
             "train_batch_size": t, "file": str(out_dir / f), "changed": ch.changed,
             "backup": str(ch.backup) if ch.backup else None}
            for (n, m, g, t, f), ch in zip(rows, changes, strict=True)
        ], indent=2, ensure_ascii=False))
        return
    click.echo(f"Preset: {preset.name} ({preset.source})")
    click.echo("")
    for line in render_table(rows):
        click.echo(line)
    click.echo("")
    for line in change_lines(changes):
        click.echo(line)


def change_lines(changes: list[FileChange]) -> list[str]:
    """Exactly which files changed: one line each, then the count."""
    lines = []
    for ch in changes:
        if not ch.changed:
            lines.append(f"unchanged {ch.path} (already holds this config)")
        elif ch.created:
            lines.append(f"created   {ch.path}")
        else:
            lines.append(f"updated   {ch.path} (previous version: {ch.backup})")
    written = sum(ch.changed for ch in changes)
    lines.append(f"wrote {written} of {len(changes)} file(s)"
                 + (f", {len(changes) - written} already up to date" if written < len(changes)
                    else ""))
    return lines
