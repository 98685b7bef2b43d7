"""Which device this rank owns, chosen once, right after the process group starts.

DeepSpeed's launcher gives every rank the same visible devices and differs only in
``LOCAL_RANK``; DeepSpeed itself calls ``set_device`` only inside ``deepspeed.initialize``.
Anything that touches the accelerator before that (building the model, a tensor ``.to``)
would land on device 0 in every rank. So the rank sets its own device first, through
DeepSpeed's accelerator abstraction: the same call is a no-op on CPU ranks in CI and
``torch.cuda.set_device`` on CUDA.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ds_wizard.core.base.errors import DsWizardError


class DeviceError(DsWizardError):
    """The rank cannot own the device its LOCAL_RANK names."""


def local_rank(env: Mapping[str, str] | None = None, fallback: int | None = None) -> int:
    """``LOCAL_RANK`` (set by every DeepSpeed and torch launcher), else ``fallback``, else 0."""
    env = os.environ if env is None else env
    raw = env.get("LOCAL_RANK")
    if raw is None:
        return 0 if fallback is None or fallback < 0 else fallback
    try:
        value = int(raw)
    except ValueError:
        raise DeviceError(f"LOCAL_RANK={raw!r} is not an integer",
                          "start the ranks with the deepspeed launcher") from None
    if value < 0:
        raise DeviceError(f"LOCAL_RANK={value} is negative", "start the ranks with the "
                          "deepspeed launcher")
    return value


def select_device(accelerator: Any | None = None, env: Mapping[str, str] | None = None,
                  fallback: int | None = None) -> str:
    """Make ``LOCAL_RANK``'s device this process's current device; return its name
    (``cuda:3``, ``cpu``). Call it before anything allocates on the accelerator."""
    if accelerator is None:
        from deepspeed.accelerator import get_accelerator

        accelerator = get_accelerator()
    rank = local_rank(env, fallback)
    if accelerator.device_name() != "cpu":
        count = accelerator.device_count()
        if rank >= count:
            raise DeviceError(
                f"LOCAL_RANK {rank} but only {count} {accelerator.device_name()} device(s) "
                "are visible to this rank",
                "launch at most one rank per visible device (check CUDA_VISIBLE_DEVICES)")
    accelerator.set_device(rank)
    return accelerator.device_name(rank)
