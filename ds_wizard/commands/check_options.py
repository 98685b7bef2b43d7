"""Options and helpers shared by ``check`` and ``fix``: --strict, --hf/--hf-args, --sp, and
the JSON object that says why a --json run was refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from ds_wizard.commands.render import echo_json
from ds_wizard.core.base.errors import DsWizardError


def strict_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--strict", is_flag=True,
        help="Treat warnings (keys DeepSpeed ignores, values it silently replaces, "
             '"auto" it turns into a default) as errors: exit 1 on any.')(fn)


def hf_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--hf-args", type=click.Path(path_type=Path, dir_okay=False), default=None,
        metavar="FILE.json",
        help="TrainingArguments as JSON (e.g. the Trainer's args.to_dict()).")(fn)
    return click.option(
        "--hf", default=None, metavar="KEY=VALUE,...",
        help='HF Trainer mode: fill "auto" as transformers does, from these '
             "TrainingArguments (per_device_train_batch_size=4,gradient_accumulation_steps=2"
             "[,world_size=N]).")(fn)


def sequence_parallel_flag(sp: int) -> int | None:
    """``--sp`` when the user typed it (a config's own key must then agree), else None."""
    source = click.get_current_context().get_parameter_source("sp")
    return sp if source == click.core.ParameterSource.COMMANDLINE else None


def refuse_as_json(exc: DsWizardError, as_json: bool, payload: dict[str, Any]) -> NoReturn:
    """Re-raise ``exc`` (one ``error:`` line); with --json, also print ``payload``, an
    object saying why, so that scripts reading the JSON get one."""
    if not as_json:
        raise exc
    click.echo(f"error: {exc.one_line()}", err=True)
    echo_json(payload)
    click.get_current_context().exit(exc.exit_code)
