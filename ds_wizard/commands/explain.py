"""``ds-wizard explain``: what a DeepSpeed batch-size error means, and the fix command."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ds_wizard.commands.render import echo_json
from ds_wizard.core.base.errors import DsWizardError, ExitCode
from ds_wizard.core.check.explain import explain as diagnose

MAX_LOG_BYTES = 16 * 1024 * 1024


@click.command("explain")
@click.argument("source", metavar="ERROR|LOG|-")
@click.option("--config", default=None, metavar="FILE",
              help="The DeepSpeed config the job used (default: the one named in the log).")
@click.option("--num-gpus", type=click.IntRange(min=1), default=None, metavar="N",
              help="The GPUs the job was meant to run on, when you know.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report.")
def explain(source: str, config: str | None, num_gpus: int | None, as_json: bool) -> None:
    """Explain a DeepSpeed batch-size error: a pasted line, a log file, or - (stdin).

    Says which world size DeepSpeed saw and which triplet it computed, the
    likely causes (most likely first), and the exact `ds-wizard fix` command.

    Exit status: 0 explained, 1 no DeepSpeed batch error found, 2 usage error.

    \b
    Examples:
      ds-wizard explain "AssertionError: ... world_size 16 != 1 * 1 * 1"
      ds-wizard explain train.log --config ds_config.json
      deepspeed train.py 2>&1 | tail -50 | ds-wizard explain -
    """
    text = _read(source)
    result = diagnose(text, config=config, num_gpus=num_gpus)
    if as_json:
        echo_json(result.to_dict())
    elif not result.found:
        click.echo("no DeepSpeed batch-size error found (looked for DeepSpeed's "
                   "\"train_batch_size is not equal to ...\", \"... has to be greater than 0\" "
                   "and the HF Trainer's \"mismatch TrainingArguments\" messages)")
    else:
        click.echo(f"DeepSpeed said: {result.message}")
        if result.world_size is not None:
            t, m, g = result.triplet or (None, None, None)
            click.echo(f"  world size DeepSpeed saw: {result.world_size}")
            click.echo(f"  triplet it computed:      train_batch_size {t}, micro-batch {m}, "
                       f"gradient accumulation {g}")
        click.echo("likely causes, most likely first:")
        for i, cause in enumerate(result.causes, 1):
            click.echo(f"  {i}. {cause}")
        if result.fix_command:
            click.echo("fix:")
            click.echo(f"  {result.fix_command}")
    click.get_current_context().exit(ExitCode.OK if result.found else ExitCode.PROBLEM)


def _read(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    path = Path(source)
    if "\n" not in source and len(source) < 4096 and path.is_file():
        if path.stat().st_size > MAX_LOG_BYTES:
            # the error is at the end of a log; read the tail only
            with path.open("rb") as fh:
                fh.seek(-MAX_LOG_BYTES, 2)
                return fh.read().decode("utf-8", errors="replace")
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise DsWizardError(f"cannot read {path}: {exc.strerror}",
                                "check the file's permissions") from exc
    return source
