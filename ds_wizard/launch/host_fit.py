"""Will CPU ranks fit in this machine's RAM? The memory model, applied to the host.

A CPU rank keeps everything a GPU rank keeps on its device (parameters, gradients,
optimizer state, activations) in host memory, plus the Python process itself. A launch
whose ranks cannot fit is refused before anything starts: the alternative is the OOM
killer taking a rank minutes later, or the whole machine swapping.
"""

from __future__ import annotations

from typing import Any

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.base.system import SystemFactError, available_memory
from ds_wizard.core.plan.memory import DEFAULT_HEADROOM
from ds_wizard.core.presets.schema import PresetSpec

GiB = 2**30
# one rank's Python + torch + deepspeed + transformers before any tensor (measured ~0.6 GiB)
PROCESS_BYTES = GiB // 2 + GiB // 8


class HostMemoryRefused(DsWizardError):
    """CPU ranks would not fit in the host's available memory; nothing was started."""


def cpu_ranks_need(cfg: dict[str, Any], spec: PresetSpec, world_size: int) -> int:
    """Host bytes for ``world_size`` CPU ranks training ``cfg`` (the memory model per rank,
    without the CUDA context, plus the process itself)."""
    per_rank, per_node = _cpu_need(cfg, spec, world_size)
    return per_rank * world_size + per_node


def cpu_rank_bytes(cfg: dict[str, Any], spec: PresetSpec, world_size: int) -> int:
    """One CPU rank's predicted peak resident set (what `tune` compares with ru_maxrss)."""
    return _cpu_need(cfg, spec, world_size)[0]


def _cpu_need(cfg: dict[str, Any], spec: PresetSpec, world_size: int) -> tuple[int, int]:
    from ds_wizard.core.plan.fit import config_estimate

    micro = cfg.get("train_micro_batch_size_per_gpu")
    if not isinstance(micro, int) or isinstance(micro, bool) or micro < 1:
        micro = spec.batch.for_world_size(world_size).micro_batch
    est = config_estimate(cfg, spec, world_size, micro, backend="transformers")
    # DeepSpeed allocates its communication buckets at full size, but pages nobody writes
    # cost a CPU rank nothing: at most the model's own size of them is ever touched
    buckets = est.detail.get("comm_buckets", 0)
    touched = min(buckets, 2 * est.params)
    per_rank = (est.total - est.detail.get("cuda_context", 0) - buckets + touched
                + PROCESS_BYTES)
    return per_rank, est.cpu_per_node


def check_cpu_ranks(cfg: dict[str, Any], spec: PresetSpec, world_size: int, preset_name: str,
                    *, available: int | None = None,
                    headroom: float = DEFAULT_HEADROOM) -> None:
    """Raise HostMemoryRefused when the ranks need more than ``headroom`` of the available
    RAM (read from the host when not given). Unknown RAM is not a reason to refuse: this is
    a guard against the OOM killer, and a host whose memory psutil cannot read may still
    train."""
    free = available
    if free is None:
        try:
            free = available_memory()
        except SystemFactError:
            return
    need = cpu_ranks_need(cfg, spec, world_size)
    if need <= free * headroom:
        return
    raise HostMemoryRefused(
        f"{world_size} CPU rank(s) of {preset_name} need about {need / GiB:.1f} GiB of RAM "
        f"(memory model) but {free / GiB:.1f} GiB is available here",
        "use a GPU machine for this preset, or tiny_mamba for a CPU demo",
    )
