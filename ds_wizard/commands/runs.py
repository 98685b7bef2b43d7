"""``ds-wizard runs``, ``attach`` and ``stop``: the runs that live on their own."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from ds_wizard.core.base.defaults import GRACE_S, KILL_AFTER_S, RUNS_DIR
from ds_wizard.core.base.text import json_text


def _runs_dir_option(f: Callable[..., None]) -> Callable[..., None]:
    return click.option("--runs-dir", default=RUNS_DIR, show_default=True, metavar="DIR",
                        help="Where the runs live.")(f)


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


@click.command("runs")
@_runs_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run, in a list.")
def runs_cmd(runs_dir: str, as_json: bool) -> None:
    """List the runs: status (checked against the live processes), progress, loss.

    Status is one of running, stalled (no rank progressed for the stall window; the line
    under the table says which rank and where, and RUN_DIR/stalls/ holds the stacks),
    finished, failed, stopped, supervisor lost (the supervisor is gone but processes of the
    job live: `ds-wizard stop` ends them), or unknown (a run from an older ds-wizard).

    \b
    Examples:
      ds-wizard runs
      ds-wizard runs --json | jq '.[] | select(.status == "running") | .name'
    """
    from ds_wizard.core.runs.runstate import list_run_summaries

    summaries = list_run_summaries(runs_dir)
    if as_json:
        click.echo(json_text([s.to_dict() for s in summaries]))
        return
    if not summaries:
        click.echo(f"no runs under {runs_dir}")
        return
    rows = [("NAME", "PRESET", "STATUS", "STEP", "LOSS", "TOK/S", "STARTED", "RUN DIR")]
    for s in summaries:
        status = s.status.value + (" (stopping)" if s.stopping else "")
        total = "?" if s.total_steps is None else s.total_steps
        step = f"{'—' if s.step is None else s.step}/{total}"
        rows.append((s.name, s.preset, status, step, _fmt(s.loss, ".4f"),
                     _fmt(s.tokens_per_s, ",.0f"), s.started.replace("T", " "),
                     str(s.run_dir)))
    widths = [max(len(_clean(r[i])) for r in rows) for i in range(len(rows[0]) - 1)]
    for i, r in enumerate(rows):
        cells = [_clean(c).ljust(w) for c, w in zip(r, widths, strict=False)]
        click.echo("  ".join([*cells, _clean(r[-1])]).rstrip())
        if i and len(summaries[i - 1].segments) > 1:
            # a run resumed on another layout: its lineage, one segment a line
            for seg in summaries[i - 1].segments:
                click.echo(f"    └ segment {seg['index']}: {_segment_text(seg)}")
    for s in summaries:
        if s.stall is not None:
            autopsy = (s.stall_detail or {}).get("autopsy")
            click.echo(f"⚠  {_clean(s.name)}: {_clean(s.stall)}"
                       + (f" (stacks in {_clean(autopsy)})" if autopsy else ""))


def _segment_text(seg: dict) -> str:
    from ds_wizard.core.runs.reshape import Segment, SegmentSpan

    return SegmentSpan(Segment.from_dict(seg), seg["first_step"], seg["last_step"]).line()


def _clean(text: str) -> str:
    """Names come from the file system: no terminal control characters."""
    return "".join(c if c.isprintable() else "?" for c in text)


@click.command("attach")
@click.argument("run")
@_runs_dir_option
@click.option("--plain", is_flag=True, help="Plain text (the log as it grows), not the TUI.")
@click.option("--lines", "-n", default=20, show_default=True,
              help="Lines of the log shown before following it.")
def attach(run: str, runs_dir: str, plain: bool, lines: int) -> None:
    """Follow a run live. Leaving (Ctrl-C, q) never stops the run.

    RUN is a run's name, a unique prefix of one, its directory, or `latest`.

    \b
    Examples:
      ds-wizard attach latest --plain
      ds-wizard attach tiny_mamba-20261129
    """
    from ds_wizard.core.runs.rundir import resolve_run_ref

    run_dir = resolve_run_ref(run, runs_dir)
    if not plain:
        from ds_wizard.app import run_attached

        run_attached(run_dir)
        return
    _attach_plain(run_dir, lines)


def _attach_plain(run_dir: Path, lines: int) -> None:
    import signal

    from ds_wizard.core.runs.runstate import summarize_run
    from ds_wizard.launch.client import follow_log, run_alive, tail_offset

    summary = summarize_run(run_dir)
    click.echo(f"📎 {run_dir.name}: {summary.status.value}"
               + ("" if not summary.alive else " · Ctrl-C leaves (the run goes on)"))
    if summary.stall is not None:
        click.echo(f"⚠  {summary.stall}")
    leaving: list[int] = []

    def leave(signum: int, frame: object) -> None:
        leaving.append(signum)
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, leave) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for line in follow_log(run_dir, tail_offset(run_dir, lines),
                               lambda: run_alive(run_dir)):
            click.echo(line)
    except KeyboardInterrupt:
        click.echo(f"\n📎 left {run_dir.name}; it goes on running "
                   f"(`ds-wizard stop {run_dir.name}` stops it)", err=True)
        return
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    after = summarize_run(run_dir)
    click.echo(f"📎 {run_dir.name} ended: {after.status.value}"
               + (f" ({after.stop_reason})" if after.stop_reason else ""))


@click.command("stop")
@click.argument("run")
@_runs_dir_option
@click.option("--now", is_flag=True, help="Kill the job now (no checkpoint).")
@click.option("--grace", type=float, default=GRACE_S, show_default=True, metavar="SECONDS",
              help="When the supervisor is lost: how long the ranks get to checkpoint.")
@click.option("--no-wait", is_flag=True, help="Send the request and return.")
def stop(run: str, runs_dir: str, now: bool, grace: float, no_wait: bool) -> None:
    """Stop a run: gracefully (the ranks save a checkpoint first), or --now.

    Works when the run's supervisor was killed too ("supervisor lost"): the job's
    processes are then stopped from here. RUN is a run's name, a unique prefix of one,
    its directory, or `latest`.

    \b
    Examples:
      ds-wizard stop latest
      ds-wizard stop tiny_mamba-20261129-131839 --now
    """
    from ds_wizard.core.runs.rundir import resolve_run_ref
    from ds_wizard.launch.client import stop_run

    run_dir = resolve_run_ref(run, runs_dir)
    if not no_wait:
        click.echo(f"⏹  stopping {run_dir.name}"
                   + (" now" if now else " (checkpoint first)") + "…", err=True)
    result = stop_run(run_dir, now=now, grace_s=grace, kill_after_s=KILL_AFTER_S,
                      wait=not no_wait)
    click.echo(f"⏹  {run_dir.name}: {result.status.value} ({result.message})")


__all__ = ["attach", "runs_cmd", "stop"]
