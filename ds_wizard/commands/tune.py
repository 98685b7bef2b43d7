"""``ds-wizard tune``: measure the micro-batch on this machine at a fixed global batch."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ds_wizard.commands.common import preset_options
from ds_wizard.commands.numbers import Count, FiniteFloat
from ds_wizard.core.base.defaults import HEADROOM, RUNS_DIR
from ds_wizard.core.base.errors import ExitCode
from ds_wizard.core.base.limits import MAX_GLOBAL_BATCH, MAX_STEPS, MAX_WORLD_SIZE
from ds_wizard.core.base.text import json_text
from ds_wizard.core.plan.backends import BACKENDS, DEFAULT_BACKEND
from ds_wizard.core.plan.tune import DEFAULT_MAX_CANDIDATES, TuneError, TuneResult, table_rows

if TYPE_CHECKING:
    from ds_wizard.launch.tune import TuneEvent


def _stages(ctx: click.Context, param: click.Parameter,
            value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        out = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: give ZeRO stages as 1,2,3") from None
    if not out or any(s not in (0, 1, 2, 3) for s in out):
        raise click.BadParameter(f"{value!r}: stages are 0, 1, 2 or 3, e.g. --stages 2,3")
    return out


@click.command("tune")
@preset_options(default="tiny_mamba")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              default=None, metavar="FILE",
              help="Start from this DeepSpeed JSON (its stage, precision and global batch).")
@click.option("--num-gpus", type=Count(MAX_WORLD_SIZE), default=None, metavar="N",
              help="Ranks (default: every visible GPU; 2 CPU ranks without a GPU).")
@click.option("--hostfile", type=click.Path(path_type=Path, dir_okay=False), default=None,
              metavar="FILE", help="DeepSpeed hostfile: tune on these nodes.")
@click.option("--global-batch", type=Count(MAX_GLOBAL_BATCH), default=None,
              help="The global batch to keep (default: the plan's). Never changed: "
                   "accumulation absorbs the micro-batch.")
@click.option("--headroom", type=FiniteFloat(0, 1, low_open=True), default=HEADROOM,
              show_default=True,
              help="A candidate fits when its measured peak is within this fraction of "
                   "the GPU's memory (of the available RAM per rank on CPU).")
@click.option("--stages", callback=_stages, default=None, metavar="LIST",
              help="ZeRO stages to try, e.g. 2,3 (default: the plan's).")
@click.option("--steps", type=Count(MAX_STEPS, low=2), default=4, show_default=True,
              help="Steps per candidate; the first is warm-up and not timed.")
@click.option("--max-candidates", type=Count(64), default=DEFAULT_MAX_CANDIDATES,
              show_default=True, help="Stop the search after this many runs.")
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False),
              default="deepspeed_config.json", show_default=True, metavar="FILE",
              help="Where the chosen config goes (the old one kept as FILE.bak).")
@click.option("--save-preset", default=None, metavar="NAME",
              help="Also write the choice into user preset NAME's by_world_size entry for "
                   "this world size (the measurement as a comment).")
@click.option("--runs-dir", default=RUNS_DIR, show_default=True, metavar="DIR",
              help="Where the candidates' scratch runs live while they run.")
@click.option("--keep-runs", is_flag=True, help="Keep each candidate's run directory.")
@click.option("--backend", type=click.Choice(BACKENDS), default=DEFAULT_BACKEND,
              show_default=True)
@click.option("--timeout", "candidate_timeout", type=FiniteFloat(1, 86400), default=600.0,
              show_default=True, metavar="SECONDS",
              help="A candidate still running after this long is killed (recorded as failed).")
@click.option("--dry-run", is_flag=True,
              help="List the candidates with their predicted peaks and the time bound; run "
                   "and write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def tune(ctx: click.Context, preset_ref: str, sets: tuple[str, ...], as_json: bool,
         candidate_timeout: float, **fields: Any) -> None:
    """Measure micro-batches on this machine as short real runs; write the fastest that fits.

    Each candidate (a micro-batch dividing the global batch over the ranks, with the
    accumulation that keeps the global batch) runs a few steps through the normal launch
    path; the first step is warm-up. Its peak memory (per GPU: the allocator's peak; per
    CPU rank: peak RSS) and steady tokens/s are measured; an out-of-memory is recorded as
    "does not fit". The search starts at the plan's choice and bisects up and down, so it
    usually runs 3 to 5 candidates. Ctrl-C stops the current candidate and keeps what was
    measured. The result is remembered for this machine: `plan`, `--auto` and `launch`
    show it as "measured here" and use it.

    Exit status: 0 a choice was written, 1 nothing fits or a candidate could not start,
    130 stopped by Ctrl-C.

    \b
    Examples:
      ds-wizard tune --preset tiny_mamba --num-gpus 2
      ds-wizard tune --preset mamba_1.4b --global-batch 256 --stages 2,3 --dry-run
      ds-wizard tune --preset mamba_1.4b --save-preset mamba_1.4b_h100 --json
    """
    from ds_wizard.launch.tune import TuneRequest, install_ctrl_c, run_tune

    stop = threading.Event()
    restore = install_ctrl_c(stop)
    try:
        result = run_tune(TuneRequest(preset_ref, sets, candidate_timeout_s=candidate_timeout,
                                      **fields), _progress, stop)
    finally:
        restore()
    if as_json:
        click.echo(json_text(result.to_dict()))
    else:
        _print(result)
    if result.interrupted:
        ctx.exit(ExitCode.SIGNAL_BASE + 2)
    if result.chosen is None and not result.dry_run:
        raise TuneError(f"no candidate fitted at global batch {result.global_batch} on "
                        f"{result.world_size} rank(s)",
                        "see the table; try --stages 2,3, a smaller --global-batch, or more "
                        "ranks")


def _progress(event: TuneEvent) -> None:
    """Progress on stderr (--json keeps stdout for the result), with the time bound."""
    if event.kind == "done":
        return
    bound = f"≤ {event.bound_s / 60:.1f} min in all" if event.bound_s else ""
    click.echo(f"[{event.elapsed_s:5.0f} s, {bound}] {event.text}", err=True)


def _print(result: TuneResult) -> None:
    rows = table_rows(result)
    if rows:
        heads = list(rows[0])
        widths = {h: max(len(h), *(len(r[h]) for r in rows)) for h in heads}
        click.echo("  ".join(h.ljust(widths[h]) for h in heads))
        for r in rows:
            click.echo("  ".join(r[h].ljust(widths[h]) for h in heads))
    click.echo(f"measured: {result.peak_kind}; limit {result.limit_source}")
    for note in result.notes:
        click.echo(f"ℹ️  {note}")
    if result.chosen is not None:
        c = result.chosen.candidate
        click.echo(f"✅ chosen: {c.label}: {result.chosen.tokens_per_s:,.0f} tokens/s; "
                   f"wrote {result.config_path}")
    if result.preset_saved is not None:
        click.echo(f"📝 preset saved: {result.preset_saved}")
    if not result.dry_run:
        click.echo(f"⏱  {result.wall_s:.0f} s for {len(result.measurements)} candidate(s)")
    sys.stdout.flush()


