"""``ds-wizard launch``: validate, create the run directory, start DeepSpeed, supervise it."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ds_wizard.commands.common import preset_options, resolve_preset
from ds_wizard.core.defaults import GRACE_S, HEADROOM, RUNS_DIR
from ds_wizard.core.errors import DsWizardError
from ds_wizard.core.runspec import BACKENDS, DEFAULT_BACKEND

if TYPE_CHECKING:
    from ds_wizard.launch.plan import RunPlan
    from ds_wizard.launch.supervisor import Supervisor


@click.command("launch")
@preset_options()
@click.option("--num-gpus", type=int, default=None,
              help="Ranks to start (default: every visible GPU; 2 CPU ranks without a GPU).")
@click.option("--gpus", default=None, metavar="LIST",
              help="The GPUs to train on, as CUDA_VISIBLE_DEVICES lists them: 2,0 or "
                   "GPU-<uuid>,… or MIG-<uuid>; rank i runs on the i-th. Default: "
                   "CUDA_VISIBLE_DEVICES, else every GPU.")
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
@click.option("--gpu-memory", default=None, metavar="SIZE",
              help="Memory of one GPU (80GiB, 80GB, 24G) the batch is fitted to, as with "
                   "--auto. Default: the smallest detected GPU; with neither, the preset's "
                   "batch is used as is.")
@click.option("--headroom", type=click.FloatRange(0, 1, min_open=True), default=HEADROOM,
              show_default=True, help="Plan to this fraction of GPU memory.")
@click.option("--runs-dir", default=RUNS_DIR, show_default=True, metavar="DIR")
@click.option("--backend", type=click.Choice(BACKENDS), default=DEFAULT_BACKEND,
              show_default=True)
@click.option("--grace", type=float, default=GRACE_S, show_default=True, metavar="SECONDS",
              help="On Ctrl-C, how long the ranks get to checkpoint before being killed.")
@click.option("--dry-run", is_flag=True, help="Validate and print the summary; start nothing.")
@click.pass_context
def launch(ctx: click.Context, preset_ref: str | None, sets: tuple[str, ...],
           num_gpus: int | None, gpus: str | None, config_path: Path | None, data: str | None,
           data_dtype: str | None, tokenizer: str | None, steps: int | None,
           resume: str | None, gpu_memory: str | None, headroom: float, runs_dir: str,
           backend: str, grace: float, dry_run: bool) -> None:
    """Train a preset under DeepSpeed, in runs/<preset>-<time>/.

    Ctrl-C (or SIGTERM, or closing the terminal) stops the whole job gracefully: the
    ranks save a checkpoint, then anything still alive after --grace seconds is killed.
    Resume with `ds-wizard launch --resume latest`.

    Exit status: 0 finished, 1 refused or failed, 2 usage error, 128+N after a stop
    by signal N (130 for Ctrl-C).

    \b
    Examples:
      ds-wizard launch --preset tiny_mamba --steps 40        # CPU demo, 2 ranks
      ds-wizard launch --preset 7b_mamba --num-gpus 8 --dry-run
      ds-wizard launch --preset mamba_130m --set train.lr=3e-4 --data corpus.jsonl
      ds-wizard launch --config deepspeed_4gpu.json --preset 7b_mamba
      ds-wizard launch --resume latest
    """
    from ds_wizard.launch import plan as planning
    from ds_wizard.launch import supervisor

    if preset_ref is None and resume is None:
        raise click.UsageError("give --preset NAME, or --resume RUN_DIR|latest")
    if resume is None:
        preset, sets = resolve_preset(preset_ref, sets), ()  # the overrides are applied
    else:
        preset = preset_ref  # prepare_run refuses --preset/--set on a resume
    plan = planning.prepare_run(planning.LaunchRequest(
        preset, num_gpus, sets=sets, config_path=config_path, data=data,
        data_dtype=data_dtype, tokenizer=tokenizer, steps=steps, resume=resume,
        runs_dir=runs_dir, backend=backend, gpu_memory=gpu_memory, headroom=headroom,
        dry_run=dry_run, gpus=gpus,
    ))
    if dry_run:
        click.echo(planning.dry_run_text(plan))
        return
    for line in planning.summary_lines(plan):
        click.echo(line)
    for note in plan.notes:
        click.echo(f"ℹ️  {note}")
    click.echo(f"📁 run directory: {plan.run_dir}")
    click.echo(f"🚀 {plan.command_text}", err=False)

    def on_signal(signum: int) -> None:
        click.echo(f"\n⏹  {signal.Signals(signum).name}: stopping the job gracefully "
                   f"(checkpoint first; killed after {grace:.0f} s; again to kill now)",
                   err=True)

    job, code, signum = supervisor.run_foreground(plan, on_line=click.echo, grace_s=grace,
                                                on_signal=on_signal)
    ctx.exit(_report(plan, job, code, signum))


def _report(plan: RunPlan, job: Supervisor, code: int, signum: int | None) -> int:
    from ds_wizard.core import runs
    from ds_wizard.launch.supervisor import describe_exit

    paths = plan.paths
    latest = runs.latest_complete(paths.checkpoints)
    where = f"checkpoint {latest.tag}" if latest else "no checkpoint yet"
    if signum is not None:
        if latest is None:
            click.echo("⏹  stopped before the first checkpoint; nothing to resume", err=True)
        else:
            click.echo(f"⏹  stopped: {where} in {paths.checkpoints}; continue with "
                       f"`ds-wizard launch --resume {paths.root}`", err=True)
        return 128 + signum
    if code == 0:
        click.echo(f"✅ training finished: {where}; weights in {paths.final}; "
                   f"metrics in {paths.metrics}")
        return 0
    reason = describe_exit(code, job)
    raise TrainingFailed(f"training failed (exit {code}): {reason}",
                         f"see {paths.log}; {where}", exit_code=code)


class TrainingFailed(DsWizardError):
    def __init__(self, message: str, hint: str | None = None, exit_code: int = 1) -> None:
        super().__init__(message, hint)
        self.exit_code = exit_code if 0 < exit_code < 256 else 1
