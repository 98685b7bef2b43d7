"""DeepSpeed's own config parser as a test oracle, outside a launched job.

``DeepSpeedConfig`` falls back to world size 1 when ``deepspeed.comm.get_rank`` raises
(no process group). Making it return 0 and passing an mpu whose
``get_data_parallel_world_size`` returns the size we want sends it down the same branch a
real Megatron/DeepSpeed job takes (``deepspeed/runtime/config.py``, ``__init__``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any
from unittest import mock


@dataclass(frozen=True)
class Verdict:
    error_type: str | None
    message: str | None
    triplet: tuple[Any, Any, Any] | None

    @property
    def valid(self) -> bool:
        return self.error_type is None


class FakeMpu:
    def __init__(self, data_parallel: int) -> None:
        self._dp = data_parallel

    def get_data_parallel_world_size(self) -> int:
        return self._dp


def deepspeed_verdict(cfg: dict[str, Any], world_size: int) -> Verdict:
    """Run DeepSpeed's parser on ``cfg`` for ``world_size`` data-parallel ranks."""
    import deepspeed.comm as dist
    from deepspeed.runtime.config import DeepSpeedConfig

    with mock.patch.object(dist, "get_rank", return_value=0):
        try:
            parsed = DeepSpeedConfig(copy.deepcopy(cfg), mpu=FakeMpu(world_size))
        except (AssertionError, ZeroDivisionError) as exc:
            return Verdict(type(exc).__name__, str(exc), None)
    assert parsed.world_size == world_size, "the oracle did not take the mpu branch"
    return Verdict(None, None, (parsed.train_batch_size, parsed.train_micro_batch_size_per_gpu,
                                parsed.gradient_accumulation_steps))


@dataclass(frozen=True)
class FullVerdict:
    """Whatever ``DeepSpeedConfig`` does with a config: accepts it, or the exception."""

    error_type: str | None
    message: str | None

    @property
    def valid(self) -> bool:
        return self.error_type is None


def deepspeed_config_verdict(cfg: dict[str, Any] | str, world_size: int) -> FullVerdict:
    """``DeepSpeedConfig`` as ``deepspeed.initialize`` builds it in a job of ``world_size``
    ranks with no mpu: ``dist.get_world_size()`` is the world, divided by a
    ``sequence_parallel_size`` key when the config has one. Any exception is a refusal.

    ``cfg`` may be a file path: it is read as DeepSpeed reads files (hjson, duplicate keys
    refused) and handed over as the dict, as the HF Trainer and ``deepspeed.initialize(
    config=dict)`` do. (Given the path itself, 0.19.8 tests ``"sequence_parallel_size" in
    config`` against the path string, so the key would be ignored.)"""
    import deepspeed.comm as dist
    from deepspeed.runtime.config import DeepSpeedConfig

    if isinstance(cfg, str):
        import hjson
        from deepspeed.runtime.config_utils import dict_raise_error_on_duplicate_keys

        with open(cfg, encoding="utf-8") as fh:
            try:
                cfg = hjson.load(fh, object_pairs_hook=dict_raise_error_on_duplicate_keys)
            except Exception as exc:  # DeepSpeed would raise the same while reading
                return FullVerdict(type(exc).__name__, str(exc))
    config = copy.deepcopy(cfg)
    with mock.patch.object(dist, "get_rank", return_value=0), \
            mock.patch.object(dist, "get_world_size", return_value=world_size):
        try:
            DeepSpeedConfig(config)
        except Exception as exc:  # the verdict is the exception, whatever its type
            return FullVerdict(type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
    return FullVerdict(None, None)
