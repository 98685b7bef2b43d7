"""GPU detection through NVML (the ``nvidia-ml-py`` package, imported as ``pynvml``).

No GPU, no driver, or any NVML failure gives a report with ``gpus == []`` and a plain
reason; it never raises. ``CUDA_VISIBLE_DEVICES`` is honoured the way CUDA applies it:
the listed devices, in the listed order, renumbered from 0.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

BF16_MIN_CC = (8, 0)  # Ampere: the first generation with bf16 tensor cores
NO_DRIVER = "no NVIDIA driver or GPU found (NVML: {})"


@dataclass(frozen=True)
class GpuInfo:
    index: int  # as CUDA will number it, after CUDA_VISIBLE_DEVICES
    nvml_index: int
    name: str
    memory_total: int  # bytes
    compute_capability: tuple[int, int]
    uuid: str = ""

    @property
    def bf16(self) -> bool:
        return self.compute_capability >= BF16_MIN_CC

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["compute_capability"] = f"{self.compute_capability[0]}.{self.compute_capability[1]}"
        d["memory_total_gib"] = round(self.memory_total / 2**30, 2)
        d["bf16"] = self.bf16
        return d


@dataclass(frozen=True)
class GpuInventory:
    gpus: list[GpuInfo] = field(default_factory=list)
    driver_version: str | None = None
    reason: str | None = None  # why there are no GPUs, when there are none
    cuda_visible_devices: str | None = None

    @property
    def count(self) -> int:
        return len(self.gpus)

    @property
    def bf16_supported(self) -> bool | None:
        """True/False when GPUs were seen (all must support it), None when none were."""
        return all(g.bf16 for g in self.gpus) if self.gpus else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "driver_version": self.driver_version,
            "cuda_visible_devices": self.cuda_visible_devices,
            "reason": self.reason,
            "gpus": [g.to_dict() for g in self.gpus],
        }


GpuProbe = Callable[[], GpuInventory]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _visible(all_gpus: list[GpuInfo], spec: str | None) -> tuple[list[GpuInfo], str | None]:
    if spec is None:
        return all_gpus, None
    chosen: list[GpuInfo] = []
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            continue
        match = None
        if token.lstrip("-").isdigit():
            idx = int(token)
            if idx < 0:
                break  # CUDA stops at the first invalid entry
            match = next((g for g in all_gpus if g.nvml_index == idx), None)
        else:
            match = next((g for g in all_gpus if g.uuid.startswith(token)), None)
        if match is None:
            break
        chosen.append(match)
    renumbered = [
        GpuInfo(i, g.nvml_index, g.name, g.memory_total, g.compute_capability, g.uuid)
        for i, g in enumerate(chosen)
    ]
    note = None if renumbered else f"CUDA_VISIBLE_DEVICES={spec!r} hides every GPU"
    return renumbered, note


def _nvml_library_loadable() -> bool:
    """Whether the driver's NVML library can be loaded, asked without importing pynvml.

    On Linux pynvml's first step is exactly this dlopen; on a machine without the driver
    it fails, and answering that here spares the ~50 ms pynvml import on the start-up
    path of every headless command. Elsewhere pynvml is asked directly.
    """
    if not sys.platform.startswith("linux"):
        return True
    import ctypes

    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


def detect_gpus() -> GpuInventory:
    """Ask NVML. Every failure becomes ``reason``; this function does not raise."""
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not _nvml_library_loadable():
        # NVML's own words for this case, so the message does not depend on the path taken
        return GpuInventory(reason=NO_DRIVER.format("NVML Shared Library Not Found"),
                         cuda_visible_devices=cvd)
    try:
        import pynvml
    except ImportError:
        return GpuInventory(reason="nvidia-ml-py is not installed (pip install nvidia-ml-py)",
                         cuda_visible_devices=cvd)
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return GpuInventory(reason=NO_DRIVER.format(exc),
                         cuda_visible_devices=cvd)
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
            gpus.append(
                GpuInfo(
                    index=i,
                    nvml_index=i,
                    name=_text(pynvml.nvmlDeviceGetName(h)),
                    memory_total=int(pynvml.nvmlDeviceGetMemoryInfo(h).total),
                    compute_capability=(int(major), int(minor)),
                    uuid=_text(pynvml.nvmlDeviceGetUUID(h)),
                )
            )
    except pynvml.NVMLError as exc:
        return GpuInventory(reason=f"NVML error while reading GPUs: {exc}",
                            cuda_visible_devices=cvd)
    finally:
        # shutdown after a failed query has nothing left to release
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()
    visible, note = _visible(gpus, cvd)
    reason = note if note else (None if visible else "NVML reports no GPUs")
    return GpuInventory(visible, driver, reason, cvd)
