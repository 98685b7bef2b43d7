"""``ds-wizard launch``: validate, create the run directory, start DeepSpeed, supervise it."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import click

from ds_wizard.commands.common import preset_options, resolve_preset
from ds_wizard.core.errors import DsWizardError


@click.command("launch")
@preset_options()
@click.option("--num-gpus", type=int, default=None,
              help="Ranks to start (default: every visible GPU; 2 CPU ranks without a GPU).")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              metavar="FILE", help="Use this DeepSpeed JSON; it must pass `ds-wizard check`.")
@click.option("--data", default=None, metavar="PATH",
              help=".txt, .jsonl (text field), pre-tokenized .bin, or a directory "
                   "(default: the embedded Python-stdlib corpus).")
@click.option("--data-dtype", type=click.Choice(["uint16", "uint32"]), default=None,
              help="Token dtype of a .bin file (default: by vocabulary size).")
@click.option("--tokenizer", default=None, metavar="FILE",
              help="A local HF tokenizer.json (default: bytes, vocabulary 256).")
@click.option("--steps", type=int, default=None,
              help="Train up to this step (default: the preset's total_steps).")
@click.option("--resume", default=None, metavar="RUN_DIR|latest",
              help="Continue a run from its latest complete checkpoint.")
@click.option("--runs-dir", default="runs", show_default=True, metavar="DIR")
@click.option("--backend", type=click.Choice(["auto", "transformers", "mamba_ssm"]),
              default="auto", show_default=True)
@click.option("--grace", type=float, default=60.0, show_default=True, metavar="SECONDS",
              help="On Ctrl-C, how long the ranks get to checkpoint before being killed.")
@click.option("--dry-run", is_flag=True, help="Validate and print the summary; start nothing.")
@click.pass_context
def launch(ctx: click.Context, preset_ref: str | None, sets: tuple[str, ...],
           num_gpus: int | None, config_path: Path | None, data: str | None,
           data_dtype: str | None, tokenizer: str | None, steps: int | None,
           resume: str | None, runs_dir: str, backend: str, grace: float,
           dry_run: bool) -> None:
    """Train a preset under DeepSpeed, in runs/<preset>-<time>/.

    Ctrl-C (or SIGTERM) stops the whole job gracefully: the ranks save a checkpoint,
    then anything still alive after --grace seconds is killed. Resume with
    `ds-wizard launch --resume latest`.
    """
    from ds_wizard import launcher

    if preset_ref is None and resume is None:
        raise click.UsageError("give --preset NAME, or --resume RUN_DIR|latest")
    preset = resolve_preset(preset_ref, sets) if preset_ref is not None else None
    plan = launcher.prepare_run(
        preset, num_gpus, config_path=config_path, data=data,
        data_dtype=data_dtype, tokenizer=tokenizer, steps=steps, resume=resume,
        runs_dir=runs_dir, backend=backend, dry_run=dry_run,
    )
    if dry_run:
        click.echo(launcher.dry_run_text(plan))
        return
    for line in launcher.summary_lines(plan):
        click.echo(line)
    for note in plan.notes:
        click.echo(f"ℹ️  {note}")
    click.echo(f"📁 run directory: {plan.run_dir}")
    click.echo(f"🚀 {plan.command_text}", err=False)

    job = launcher.start(plan)
    signals: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        signals.append(signum)
        if len(signals) == 1:
            click.echo(f"\n⏹  {signal.Signals(signum).name}: stopping the job gracefully "
                       f"(checkpoint first; killed after {grace:.0f} s; again to kill now)",
                       err=True)
            threading.Thread(target=job.stop, kwargs={"grace_s": grace}, daemon=True).start()
        else:
            job.kill()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for line in job.lines():
            click.echo(line)
        code = job.wait()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    ctx.exit(_report(plan, job, code, signals))


def _report(plan: object, job: object, code: int, signals: list[int]) -> int:
    from ds_wizard import launcher
    from ds_wizard.core import runs

    assert isinstance(plan, launcher.RunPlan) and isinstance(job, launcher.Supervisor)
    paths = plan.paths
    latest = runs.latest_complete(paths.checkpoints)
    where = f"checkpoint {latest.tag}" if latest else "no checkpoint yet"
    if signals:
        if latest is None:
            click.echo("⏹  stopped before the first checkpoint; nothing to resume", err=True)
        else:
            click.echo(f"⏹  stopped: {where} in {paths.checkpoints}; continue with "
                       f"`ds-wizard launch --resume {paths.root}`", err=True)
        return 128 + signals[0]
    if code == 0:
        click.echo(f"✅ training finished: {where}; weights in {paths.final}; "
                   f"metrics in {paths.metrics}")
        return 0
    reason = launcher.describe_exit(code, job)
    raise TrainingFailed(f"training failed (exit {code}): {reason}",
                         f"see {paths.log}; {where}", exit_code=code)


class TrainingFailed(DsWizardError):
    def __init__(self, message: str, hint: str | None = None, exit_code: int = 1) -> None:
        super().__init__(message, hint)
        self.exit_code = exit_code if 0 < exit_code < 256 else 1
