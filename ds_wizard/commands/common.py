"""Options shared by every command that takes a preset."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ds_wizard.commands.numbers import parse_gpu_counts  # noqa: F401 (re-exported)
from ds_wizard.core.base.text import sanitize
from ds_wizard.core.presets.lookup import Preset
from ds_wizard.core.presets.overrides import load_with_overrides

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def set_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Repeatable ``--set key=value``, passed as ``sets``."""
    return click.option(
        "--set", "sets", multiple=True, metavar="KEY=VALUE",
        help="Override a preset field, e.g. --set model.n_layer=48 --set train.lr=3e-4.",
    )(fn)


def preset_options(default: str | None = None) -> Decorator:
    """``--preset NAME|PATH`` and repeatable ``--set key=value``."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn = set_option(fn)
        return click.option(
            "--preset", "preset_ref", default=default, show_default=bool(default),
            metavar="NAME|PATH", help="Preset name (see `ds-wizard presets`) or a .toml path.",
        )(fn)

    return decorate


def monitor_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--monitor tensorboard,csv,wandb``: DeepSpeed's monitor blocks (issue 22)."""
    return click.option(
        "--monitor", default=None, metavar="LIST",
        help="Trackers fed by DeepSpeed's monitor: tensorboard, csv, wandb (comma-separated), "
             "or none. Default: the preset's [monitor] trackers.")(fn)


def with_monitor(sets: tuple[str, ...], monitor: str | None) -> tuple[str, ...]:
    """``--monitor`` as the preset override it stands for (one door: ``monitor.trackers``)."""
    if monitor is None:
        return sets
    from ds_wizard.core.config.monitor import monitor_set, parse_trackers

    return (*sets, monitor_set(parse_trackers(monitor)))


def resolve_preset(ref: str, sets: tuple[str, ...] = ()) -> Preset:
    """Load a preset and apply ``--set`` overrides; errors are DsWizardError one-liners."""
    preset = load_with_overrides(ref, sets)
    for notice in preset.notices:  # e.g. "migrated from schema_version 1"
        click.echo(f"note: {sanitize(notice)}", err=True)
    return preset


def renamed_option(old: str, new: str, dest: str, **attrs: Any) -> Decorator:
    """``new`` as the option, with ``old`` kept as a hidden spelling for one release.

    The old spelling still works and prints a one-line deprecation note on stderr; --help
    shows only the new name. ``attrs`` are the option's click attributes.
    """
    key = f"renamed:{dest}"

    def remember(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        if value is not None:
            click.echo(f"note: {old} is deprecated and will be removed in the next release; "
                       f"use {new}", err=True)
            ctx.meta[key] = value

    def merge(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        # click handles the options given on the command line first, so an old spelling has
        # been remembered by the time the new option (given or not) is processed
        return value if value is not None else ctx.meta.get(key)

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn = click.option(old, f"_{dest}_renamed", hidden=True, expose_value=False,
                          callback=remember, type=attrs.get("type"), default=None)(fn)
        return click.option(new, dest, callback=merge, default=None, **attrs)(fn)

    return decorate
