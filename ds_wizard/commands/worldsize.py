"""``--num-gpus`` with tensor/pipeline/sequence degrees → the data-parallel size."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from ds_wizard.commands.numbers import Count
from ds_wizard.core.batchmath import data_parallel_size
from ds_wizard.core.limits import MAX_WORLD_SIZE


@dataclass(frozen=True)
class WorldSize:
    """The data-parallel size the batch formula uses, and where it came from."""

    data_parallel: int
    total_ranks: int
    source: str  # one line for the user: "--num-gpus 4", "4 GPUs detected", "assumed …"
    flags: str  # the flags that reproduce it, for suggested commands

    def describe(self) -> str:
        if self.data_parallel == self.total_ranks:
            return f"world size {self.data_parallel} ({self.source})"
        return (f"data-parallel size {self.data_parallel} = {self.total_ranks} ranks / "
                f"model-parallel degrees ({self.source})")


def world_size_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--num-gpus`` plus ``--tp/--pp/--sp``."""
    for name, help_text in (
        ("--sp", "Sequence-parallel degree (Ulysses)."),
        ("--pp", "Pipeline-parallel degree."),
        ("--tp", "Tensor-parallel degree."),
    ):
        fn = click.option(name, type=Count(MAX_WORLD_SIZE), default=1, show_default=True,
                          help=help_text)(fn)
    return click.option(
        "--num-gpus", type=Count(MAX_WORLD_SIZE), default=None, metavar="N",
        help="Total GPUs (ranks) the job runs on. Default: the GPUs detected here.",
    )(fn)


def resolve_world_size(num_gpus: int | None, tp: int = 1, pp: int = 1, sp: int = 1) -> WorldSize:
    """Total ranks from the flag or NVML (else 1, said plainly), divided by tp × pp × sp."""
    if num_gpus is not None:
        total, source = num_gpus, f"--num-gpus {num_gpus}"
    else:
        from ds_wizard.core.gpus import detect_gpus

        report = detect_gpus()
        if report.count:
            total, source = report.count, f"{report.count} GPU(s) detected"
        else:
            total = 1
            source = (f"assumed 1: no GPU detected ({report.reason}); "
                      "pass --num-gpus N for the machine the job runs on")
    try:
        dp = data_parallel_size(total, tp, pp, sp)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    flags = f"--num-gpus {total}" + "".join(
        f" --{name} {v}" for name, v in (("tp", tp), ("pp", pp), ("sp", sp)) if v != 1
    )
    return WorldSize(dp, total, source, flags)
