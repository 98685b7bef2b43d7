"""GPU detection through NVML (the ``nvidia-ml-py`` package, imported as ``pynvml``).

No GPU, no driver, or an NVML failure gives a report with ``gpus == []`` and a plain
reason; it never raises. One device that NVML refuses (``NVML_ERROR_NO_PERMISSION`` in a
cgroup-restricted Slurm job or container, a lost GPU) is left out with its reason in
``skipped``; the others stay usable.

``CUDA_VISIBLE_DEVICES`` is honoured the way CUDA applies it: integer ids, ``GPU-`` UUIDs
(or their unique prefixes) and ``MIG-`` instance ids, in the listed order, renumbered
from 0, stopping at the first entry that names nothing. Integer ids follow CUDA's order,
not NVML's: with ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` they are NVML's (PCI) order; by default
CUDA puts the fastest device first, which ds-wizard approximates by compute capability
(an exact match on machines whose GPUs are all one model).

A GPU in MIG mode is listed as its MIG instances, each with its own memory.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

BF16_MIN_CC = (8, 0)  # Ampere: the first generation with bf16 tensor cores
NO_DRIVER = "no NVIDIA driver or GPU found (NVML: {})"
MIG_ENABLED = 1  # pynvml.NVML_DEVICE_MIG_ENABLE


@dataclass(frozen=True)
class GpuInfo:
    index: int  # as CUDA will number it, after CUDA_VISIBLE_DEVICES
    nvml_index: int  # the physical GPU's NVML index (the parent's, for a MIG instance)
    name: str
    memory_total: int  # bytes
    compute_capability: tuple[int, int]
    uuid: str = ""  # "GPU-…", or "MIG-…" for a MIG instance
    mig: bool = False  # a MIG instance: one CUDA process sees one such device

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
    skipped: tuple[str, ...] = ()  # devices NVML refused, each with its reason
    notes: tuple[str, ...] = ()  # e.g. how integer ids were ordered

    @property
    def count(self) -> int:
        return len(self.gpus)

    @property
    def bf16_supported(self) -> bool | None:
        """True/False when GPUs were seen (all must support it), None when none were."""
        return all(g.bf16 for g in self.gpus) if self.gpus else None

    @property
    def mig(self) -> bool:
        """Whether any visible device is a MIG instance."""
        return any(g.mig for g in self.gpus)

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "driver_version": self.driver_version,
            "cuda_visible_devices": self.cuda_visible_devices,
            "reason": self.reason,
            "gpus": [g.to_dict() for g in self.gpus],
            "skipped": list(self.skipped),
            "notes": list(self.notes),
        }


GpuProbe = Callable[[], GpuInventory]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class _Physical:
    """One physical GPU as NVML reports it, with its MIG instances (if in MIG mode)."""

    info: GpuInfo
    migs: tuple[GpuInfo, ...] = ()
    mig_ids: tuple[tuple[int, int], ...] = ()  # (GPU instance, compute instance) per MIG

    def enumerated(self) -> GpuInfo | None:
        """What a CUDA process enumerates for this GPU: itself, or its first MIG instance
        (CUDA shows one MIG device per process)."""
        if self.migs:
            return self.migs[0]
        return None if self.mig_mode_empty else self.info

    @property
    def mig_mode_empty(self) -> bool:
        """MIG mode is on but no instance exists: CUDA has nothing to run on."""
        return self.info.mig and not self.migs


def cuda_order(physical: list[_Physical], order: str | None) -> tuple[list[_Physical], str | None]:
    """The physical GPUs in the order CUDA numbers them, and a note when it is a guess."""
    if (order or "FASTEST_FIRST").upper() == "PCI_BUS_ID":
        return physical, None
    # FASTEST_FIRST: CUDA's own heuristic is unpublished; the newest architecture first,
    # ties kept in PCI order, is what it does on every mixed box we know of
    ranked = sorted(physical, key=lambda p: (-p.info.compute_capability[0],
                                           -p.info.compute_capability[1],
                                           -p.info.memory_total, p.info.nvml_index))
    models = {(p.info.name, p.info.compute_capability, p.info.memory_total) for p in physical}
    if len(models) > 1:
        return ranked, ("GPUs of different models and CUDA_DEVICE_ORDER is not PCI_BUS_ID: "
                        "integer ids follow CUDA's fastest-first order, which ds-wizard "
                        "guesses by compute capability; export CUDA_DEVICE_ORDER=PCI_BUS_ID "
                        "to number them as nvidia-smi does")
    return ranked, None


def _match(token: str, ordered: list[_Physical]) -> GpuInfo | None:
    if token.lstrip("-").isdigit():
        idx = int(token)
        return ordered[idx].enumerated() if 0 <= idx < len(ordered) else None
    if token.startswith("MIG-GPU-"):  # CUDA 11.0-11.x form: MIG-GPU-<uuid>/<gi>/<ci>
        parent, _, rest = token[len("MIG-"):].partition("/")
        gi, _, ci = rest.partition("/")
        for p in ordered:
            if p.info.uuid == parent and gi.isdigit() and ci.isdigit():
                for mig, ids in zip(p.migs, p.mig_ids, strict=False):
                    if ids == (int(gi), int(ci)):
                        return mig
        return None
    if token.startswith("MIG-"):
        hits = [m for p in ordered for m in p.migs if m.uuid.startswith(token)]
    else:
        hits = [p.enumerated() for p in ordered if p.info.uuid.startswith(token)]
    # a prefix naming two devices is ambiguous, and CUDA refuses it
    return hits[0] if len(hits) == 1 else None


def _visible(physical: list[_Physical], spec: str | None,
             order: str | None = None) -> tuple[list[GpuInfo], str | None, str | None]:
    """(visible devices renumbered from 0, reason when none, ordering note)."""
    ordered, order_note = cuda_order(physical, order)
    if spec is None:
        chosen = [g for g in (p.enumerated() for p in ordered) if g is not None]
        if any(p.migs for p in ordered):
            # without CUDA_VISIBLE_DEVICES a process sees the GPUs' first MIG instances
            # only; listing all of them lets the user pick one
            chosen = [g for p in ordered for g in (p.migs or (p.info,))
                      if not p.mig_mode_empty]
    else:
        chosen = []
        for token in (t.strip() for t in spec.split(",")):
            if not token:
                continue
            if token.lstrip("-").isdigit() and int(token) < 0:
                break  # CUDA stops at the first invalid entry
            match = _match(token, ordered)
            if match is None or match in chosen:
                break
            chosen.append(match)
    renumbered = [replace(g, index=i) for i, g in enumerate(chosen)]
    note = f"CUDA_VISIBLE_DEVICES={spec!r} hides every GPU" if spec is not None \
        and not renumbered and physical else None
    return renumbered, note, order_note


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


def _mig_instances(nvml: Any, handle: Any, parent: GpuInfo) -> tuple[
        tuple[GpuInfo, ...], tuple[tuple[int, int], ...], bool]:
    """(MIG instances, their (gi, ci) ids, whether MIG mode is on) for one GPU."""
    try:
        current, _pending = nvml.nvmlDeviceGetMigMode(handle)
    except (AttributeError, nvml.NVMLError):
        return (), (), False  # no MIG support on this GPU (or in this pynvml)
    if current != MIG_ENABLED:
        return (), (), False
    migs, ids = [], []
    for j in range(int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))):
        try:
            mh = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, j)
        except nvml.NVMLError:
            continue  # an empty slot: NVML_ERROR_NOT_FOUND
        migs.append(GpuInfo(
            index=0, nvml_index=parent.nvml_index, name=_text(nvml.nvmlDeviceGetName(mh)),
            memory_total=int(nvml.nvmlDeviceGetMemoryInfo(mh).total),
            compute_capability=parent.compute_capability,
            uuid=_text(nvml.nvmlDeviceGetUUID(mh)), mig=True))
        gi = ci = -1
        with contextlib.suppress(AttributeError, nvml.NVMLError):
            gi = int(nvml.nvmlDeviceGetGpuInstanceId(mh))
            ci = int(nvml.nvmlDeviceGetComputeInstanceId(mh))
        ids.append((gi, ci))
    return tuple(migs), tuple(ids), True


def _read_device(nvml: Any, i: int) -> _Physical:
    h = nvml.nvmlDeviceGetHandleByIndex(i)
    major, minor = nvml.nvmlDeviceGetCudaComputeCapability(h)
    info = GpuInfo(index=i, nvml_index=i, name=_text(nvml.nvmlDeviceGetName(h)),
                   memory_total=int(nvml.nvmlDeviceGetMemoryInfo(h).total),
                   compute_capability=(int(major), int(minor)),
                   uuid=_text(nvml.nvmlDeviceGetUUID(h)))
    migs, ids, mig_mode = _mig_instances(nvml, h, info)
    # a GPU in MIG mode with no instance created gives CUDA nothing to run on
    return _Physical(replace(info, mig=mig_mode), migs, ids)


_FROM_ENV = "\0env"


def detect_gpus(visible: str | None = _FROM_ENV) -> GpuInventory:
    """Ask NVML. Every failure becomes ``reason`` or a ``skipped`` entry; never raises.

    ``visible``: a device list in CUDA_VISIBLE_DEVICES form (``launch --gpus``); by default
    the variable itself, None for every GPU.
    """
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES") if visible == _FROM_ENV else visible
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
    physical: list[_Physical] = []
    skipped: list[str] = []
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        for i in range(pynvml.nvmlDeviceGetCount()):
            # NVML counts devices this process may not open (its docs: handle
            # NVML_ERROR_NO_PERMISSION per device); one such device costs only itself
            try:
                physical.append(_read_device(pynvml, i))
            except pynvml.NVMLError as exc:
                skipped.append(f"GPU {i} (NVML index): {exc}")
    except pynvml.NVMLError as exc:
        return GpuInventory(reason=f"NVML error while reading GPUs: {exc}",
                            cuda_visible_devices=cvd, skipped=tuple(skipped))
    finally:
        # shutdown after a failed query has nothing left to release
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()
    visible, note, order_note = _visible(physical, cvd, os.environ.get("CUDA_DEVICE_ORDER"))
    if visible:
        reason = None
    elif note:
        reason = note
    elif skipped:
        reason = f"NVML refused every GPU ({skipped[0]})"
    elif any(p.mig_mode_empty for p in physical):
        reason = "the GPUs are in MIG mode with no MIG instance created"
    else:
        reason = "NVML reports no GPUs"
    notes = (order_note,) if order_note and visible else ()
    return GpuInventory(visible, driver, reason, cvd, tuple(skipped), notes)
