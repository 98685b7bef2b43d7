"""``ds-wizard explain``: what a DeepSpeed batch-size error means, and the fix command."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import BinaryIO

import click

from ds_wizard.commands.render import echo_json
from ds_wizard.core.base.errors import ExitCode
from ds_wizard.core.base.fsio import InputError, iter_input
from ds_wizard.core.base.text import sanitize
from ds_wizard.core.check.checker import load_config_file
from ds_wizard.core.check.explain import explain as diagnose
from ds_wizard.core.check.explain import relevant_text

#: bytes of a log (or of stdin) that explain scans, whole, line by line
MAX_LOG_BYTES = 4 << 30


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
    if config is not None:
        load_config_file(config)  # an unreadable --config is one error line, not ignored
    text = _read(source)
    result = diagnose(text, config=config, num_gpus=num_gpus)
    if as_json:
        echo_json(result.to_dict())
    elif not result.found:
        if result.note:
            click.echo(f"not DeepSpeed's error: {sanitize(result.message)}")
            click.echo(f"  {result.note}")
        click.echo("no DeepSpeed batch-size error found (looked for DeepSpeed's "
                   "\"train_batch_size is not equal to ...\", \"... has to be greater than 0\" "
                   "and the HF Trainer's \"mismatch TrainingArguments\" messages)")
    else:
        click.echo(f"DeepSpeed said: {sanitize(result.message)}")
        if result.world_size is not None:
            t, m, g = result.triplet or (None, None, None)
            click.echo(f"  world size DeepSpeed saw: {result.world_size}")
            click.echo(f"  triplet it computed:      train_batch_size {t}, micro-batch {m}, "
                       f"gradient accumulation {g}")
        click.echo("likely causes, most likely first:")
        for i, cause in enumerate(result.causes, 1):
            click.echo(f"  {i}. {sanitize(cause)}")
        if result.fix_command:
            click.echo("fix:")
            click.echo(f"  {sanitize(result.fix_command)}")
    click.get_current_context().exit(ExitCode.OK if result.found else ExitCode.PROBLEM)


def _read(source: str) -> str:
    """The relevant lines of stdin, of a log file, or the pasted text itself.

    A log or stdin is read whole, in one pass, keeping only the lines that can hold a
    DeepSpeed batch error or a launcher hint (so an error in the middle of a 100 MB log is
    found, and memory does not grow with the log), up to MAX_LOG_BYTES.
    """
    if source == "-":
        stream = getattr(sys.stdin, "buffer", None)
        if stream is None:  # a text stream without bytes under it (an embedding caller)
            return relevant_text([sys.stdin.read(MAX_LOG_BYTES).encode("utf-8", "replace")])
        return relevant_text(_stdin_chunks(stream))
    if "\n" not in source and len(source) < 4096 and os.path.lexists(source):
        return relevant_text(iter_input(source, limit=MAX_LOG_BYTES, what="log file"))
    return source


def _stdin_chunks(stream: BinaryIO) -> Iterator[bytes]:
    total = 0
    while chunk := stream.read(1 << 20):
        total += len(chunk)
        if total > MAX_LOG_BYTES:
            raise InputError(f"standard input: more than the {MAX_LOG_BYTES >> 30} GiB limit "
                             "for a log", "pipe the end of the log, e.g. `tail -n 1000 LOG`")
        yield chunk
