"""The deep check: DeepSpeed's real ``DeepSpeedConfig`` run in-process on a config.

``check --deep``, ``fix`` and ``launch`` end with it. It imports DeepSpeed (and torch), so
it lives outside ``ds_wizard.core`` and is imported only when called.

Outside a launched job ``DeepSpeedConfig`` sees no process group and assumes world size 1
(``deepspeed/runtime/config.py``). For the duration of the call this module makes
``deepspeed.comm.get_rank`` return 0 and ``get_world_size`` return the world size the job
will have, which sends DeepSpeed down the branch ``deepspeed.initialize`` takes in a real
job without an mpu (a ``sequence_parallel_size`` key then divides the world, as there).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import sys
from dataclasses import asdict, dataclass
from typing import Any
from unittest import mock


@dataclass(frozen=True)
class DeepVerdict:
    """What ``DeepSpeedConfig`` did with the config."""

    accepted: bool
    error_type: str | None
    message: str | None
    world_size: int
    train_batch_size: Any = None
    train_micro_batch_size_per_gpu: Any = None
    gradient_accumulation_steps: Any = None
    deepspeed_version: str = ""
    data_parallel: Any = None  # DeepSpeed's own world size (divided by sequence_parallel_size)

    def line(self) -> str:
        """One line for the user."""
        if self.accepted:
            return (f"DeepSpeed {self.deepspeed_version} accepts it at world size "
                    f"{self.world_size}: {self.train_batch_size} = "
                    f"{self.train_micro_batch_size_per_gpu} × "
                    f"{self.gradient_accumulation_steps} × {self.data_parallel}")
        return (f"DeepSpeed {self.deepspeed_version} refuses it at world size "
                f"{self.world_size}: {self.error_type}: {self.message}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def deep_check(config: dict[str, Any] | str | os.PathLike[str], world_size: int) -> DeepVerdict:
    """Run ``DeepSpeedConfig`` on ``config`` (a dict, or a file DeepSpeed reads itself with
    hjson) for a job of ``world_size`` ranks (the data-parallel size before sequence
    parallelism). Never raises for a bad config: the exception is the verdict.

    For ``launch``: call ``deep_check(config_path, data_parallel_ranks)`` before starting
    any process and refuse to launch unless ``.accepted``.
    """
    # DeepSpeed logs to stdout; keep stdout for ds-wizard's own report (and --json). Its
    # import also warns "Setting accelerator to CPU" where no GPU is found: that is not
    # ds-wizard's to say (and must never come before a one-line refusal), so log records
    # below ERROR are dropped while it is imported.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            import deepspeed
            import deepspeed.comm as dist
            from deepspeed.accelerator import get_accelerator
            from deepspeed.runtime.config import DeepSpeedConfig

            get_accelerator()  # chooses (and announces) the accelerator now, silenced
    finally:
        logging.disable(previous)

    arg: Any = str(config) if isinstance(config, (str, os.PathLike)) else copy.deepcopy(config)
    if isinstance(arg, str):
        from ds_wizard.core.base.fsio import read_input
        from ds_wizard.core.check.checker import MAX_CONFIG_BYTES

        # DeepSpeed opens the file itself: it must be a regular file of sane size first
        read_input(arg, limit=MAX_CONFIG_BYTES, what=".json config file")
    ds_logger = logging.getLogger("DeepSpeed")
    level = ds_logger.level
    ds_logger.setLevel(logging.ERROR)  # deprecation chatter is check's job, not this one's
    try:
        with contextlib.redirect_stdout(sys.stderr), \
                mock.patch.object(dist, "get_rank", return_value=0), \
                mock.patch.object(dist, "get_world_size", return_value=world_size):
            try:
                parsed = DeepSpeedConfig(arg)
            except Exception as exc:  # any exception here is DeepSpeed refusing the config
                text = str(exc).strip().splitlines()
                return DeepVerdict(False, type(exc).__name__, " ".join(t.strip() for t in text[:3]),
                                   world_size, deepspeed_version=deepspeed.__version__)
    finally:
        ds_logger.setLevel(level)
    return DeepVerdict(True, None, None, world_size, parsed.train_batch_size,
                       parsed.train_micro_batch_size_per_gpu, parsed.gradient_accumulation_steps,
                       deepspeed.__version__, parsed.world_size)



def settle(report: Any, cfg: dict[str, Any], world_size: int) -> DeepVerdict | None:
    """``core.config.filecheck.settle_unmirrored`` with DeepSpeed's own parser: for a
    config holding values the fast verdict does not mirror, DeepSpeed decides."""
    from ds_wizard.core.config.filecheck import settle_unmirrored

    return settle_unmirrored(report, cfg, world_size, deep_check)  # type: ignore[no-any-return]
