"""Numeric click option types: every command reads numbers through core.limits."""

from __future__ import annotations

from typing import Any

import click

from ds_wizard.core.base.limits import MAX_WORLD_SIZE, LimitError, parse_float, parse_int

#: GPU counts one ``--gpus`` list may name (one config file each for ``generate``)
MAX_GPU_COUNTS = 64


class Count(click.ParamType):
    """A whole number in ``[low, high]`` read by :func:`ds_wizard.core.base.limits.parse_int`,
    so every command refuses ``²``, ``1e30`` and ``10^12`` the same way (a usage error)."""

    name = "integer"

    def __init__(self, high: int, low: int = 1) -> None:
        self.low, self.high = low, high

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        what = param.opts[0] if param is not None and param.opts else "value"
        try:
            return parse_int(value, what, low=self.low, high=self.high)
        except LimitError as exc:
            self.fail(exc.one_line(), param, ctx)


class FiniteFloat(click.ParamType):
    """A finite number in ``[low, high]`` (``(low, high]`` with ``low_open``); never NaN/inf."""

    name = "number"

    def __init__(self, low: float, high: float, *, low_open: bool = False) -> None:
        self.low, self.high, self.low_open = low, high, low_open

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        what = param.opts[0] if param is not None and param.opts else "value"
        try:
            return parse_float(value, what, low=self.low, high=self.high,
                               low_open=self.low_open)
        except LimitError as exc:
            self.fail(exc.one_line(), param, ctx)


def gpu_counts(value: str) -> list[int]:
    """``1,2,4,8`` → ``[1, 2, 4, 8]``: whole numbers within the GPU limit, each once, in
    order. Raises LimitError."""
    tokens = value.split(",")
    if len(tokens) > MAX_GPU_COUNTS:
        raise LimitError(f"{len(tokens)} GPU counts given",
                         f"give at most {MAX_GPU_COUNTS}, e.g. 1,2,4,8")
    counts: list[int] = []
    for token in tokens:
        n = parse_int(token, "GPU count", high=MAX_WORLD_SIZE)
        if n not in counts:
            counts.append(n)
    return counts


def parse_gpu_counts(_ctx: click.Context | None, _param: object, value: str) -> list[int]:
    """Click callback for ``--gpus 1,2,4,8`` (see :func:`gpu_counts`)."""
    try:
        return gpu_counts(value)
    except LimitError as exc:
        raise click.BadParameter(f"{exc.one_line()}; write e.g. 1,2,4,8") from exc
