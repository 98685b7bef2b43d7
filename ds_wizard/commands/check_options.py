"""Options and helpers shared by ``check`` and ``fix``: --strict, --hf/--hf-args, --sp."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ds_wizard.core.base.text import json_text
from ds_wizard.core.check.hfmode import HfFill, fill_like_trainer, parse_hf_args


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


def hf_fill(cfg: dict[str, Any], hf: str | None, hf_args: Path | None,
            world_size: int) -> HfFill | None:
    """The config as the HF Trainer fills it, when --hf or --hf-args is given."""
    if hf is None and hf_args is None:
        return None
    return fill_like_trainer(cfg, parse_hf_args(hf, hf_args, world_size))


def dumps_json(data: Any) -> str:
    """JSON for scripts: UTF-8 as written (×, not \\u00d7)."""
    return json_text(data)
