"""Peak dense tensor throughput per GPU, for MFU (model FLOPs utilisation).

MFU = achieved model FLOP/s ÷ the GPU's peak **dense** (no 2:4 sparsity) throughput in the
precision the matmuls run in. NVIDIA's datasheets print the sparse figure next to a
footnote; the dense one is half of it. Every figure below is dense, in TFLOP/s, with the
document it comes from. A GPU that is not listed gets no MFU figure rather than a wrong one.

Names are matched against ``torch.cuda.get_device_name()`` (``NVIDIA H100 80GB HBM3``,
``NVIDIA H100 PCIe``, ``NVIDIA A100-SXM4-80GB``, ``NVIDIA GeForce RTX 4090`` …), upper-cased,
first match wins, so the more specific patterns come first (H100 NVL before H100, L40S
before L40 before L4, A100 before A10).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

TERA = 1e12


@dataclass(frozen=True)
class Peak:
    pattern: str  # a regular expression on the upper-cased device name
    bf16: float | None  # dense BF16 tensor TFLOP/s (None: no bf16 tensor cores)
    fp16: float  # dense FP16 tensor TFLOP/s, FP32 accumulate
    source: str


PEAKS: tuple[Peak, ...] = (
    # --- Hopper -------------------------------------------------------------------------
    # NVIDIA H100 Tensor Core GPU datasheet: BF16 1,979 (SXM) / 1,671 (NVL) / 1,513 (PCIe)
    # TFLOPS "with sparsity".
    Peak(r"GH200", 989.5, 989.5, "GH200 Grace Hopper Superchip datasheet (H100/H200 SXM class)"),
    Peak(r"H200\s*NVL", 835.5, 835.5, "H200 datasheet: H200 NVL BF16 1,671 sparse"),
    Peak(r"H200", 989.5, 989.5, "H200 datasheet: H200 SXM BF16 1,979 sparse"),
    Peak(r"H100\s*NVL", 835.5, 835.5, "H100 datasheet: H100 NVL BF16 1,671 sparse"),
    Peak(r"H100.*PCIE", 756.5, 756.5, "H100 datasheet: H100 PCIe BF16 1,513 sparse"),
    Peak(r"H100", 989.5, 989.5, "H100 datasheet: H100 SXM BF16 1,979 sparse"),
    # H800: the export variant of H100 with reduced NVLink; same tensor cores and clocks
    Peak(r"H800.*PCIE", 756.5, 756.5, "H800 PCIe: H100 PCIe compute (reduced NVLink only)"),
    Peak(r"H800", 989.5, 989.5, "H800 SXM: H100 SXM compute (reduced NVLink only)"),
    # --- Blackwell ----------------------------------------------------------------------
    # NVIDIA Blackwell datasheets (HGX B200 / GB200 NVL72): FP16/BF16 4.5 / 5 PFLOPS per GPU
    # sparse. (B300 is left out until its dense BF16 figure is confirmed.)
    Peak(r"GB200", 2500.0, 2500.0, "GB200 NVL72 datasheet: BF16 5 PF sparse per GPU"),
    Peak(r"B200", 2250.0, 2250.0, "HGX B200 datasheet: BF16 4.5 PF sparse per GPU"),
    Peak(r"B100", 1750.0, 1750.0, "HGX B100 datasheet: BF16 3.5 PF sparse per GPU"),
    # --- Ampere (data centre) -----------------------------------------------------------
    Peak(r"A100", 312.0, 312.0, "A100 datasheet: BF16 312 dense / 624 sparse (SXM and PCIe)"),
    Peak(r"A800", 312.0, 312.0, "A800 datasheet: BF16 312 dense (A100 compute)"),
    Peak(r"\bA30\b", 165.0, 165.0, "A30 datasheet: BF16 165 dense / 330 sparse"),
    Peak(r"\bA40\b", 149.7, 149.7, "A40 datasheet: BF16 149.7 dense / 299.4 sparse"),
    # \bA10\b does not match A100 or A10G (the AWS part has lower clocks; not listed)
    Peak(r"\bA10\b", 125.0, 125.0, "A10 datasheet: BF16 125 dense / 250 sparse"),
    # --- Ada (data centre) --------------------------------------------------------------
    Peak(r"L40S", 362.05, 362.05, "L40S datasheet: BF16 362.05 dense / 733 sparse"),
    Peak(r"\bL40\b", 181.05, 181.05, "L40 datasheet: BF16 181.05 dense / 362.1 sparse"),
    Peak(r"\bL4\b", 121.0, 121.0, "L4 datasheet: BF16 121 dense / 242 sparse"),
    # --- Workstation and GeForce --------------------------------------------------------
    # Ada / Ampere whitepapers, "Peak BF16 Tensor TFLOPS with FP32 Accumulate" (GeForce
    # cards run FP32-accumulate at half the FP16-accumulate rate; training uses FP32).
    Peak(r"RTX 6000 ADA", 364.2, 364.2, "RTX 6000 Ada datasheet: 728.5 sparse, FP32 acc."),
    Peak(r"RTX A6000", 154.8, 154.8, "RTX A6000 datasheet: tensor 309.7 sparse"),
    Peak(r"RTX 4090", 165.2, 165.2, "Ada whitepaper: RTX 4090 BF16, FP32 accumulate"),
    Peak(r"RTX 3090", 71.0, 71.0, "GA102 whitepaper: RTX 3090 BF16, FP32 accumulate"),
    # --- Pre-Ampere: no bf16 tensor cores (fp16 runs only) -------------------------------
    Peak(r"V100.*PCIE", None, 112.0, "V100 datasheet: PCIe FP16 tensor 112"),
    Peak(r"V100", None, 125.0, "V100 datasheet: SXM2 FP16 tensor 125"),
    Peak(r"\bT4\b", None, 65.0, "T4 datasheet: FP16 tensor 65"),
    # --- AMD Instinct (ROCm reports these names through torch.cuda) ----------------------
    Peak(r"MI325X", 1307.4, 1307.4, "AMD Instinct MI325X datasheet: BF16 1307.4 dense"),
    Peak(r"MI300X", 1307.4, 1307.4, "AMD Instinct MI300X datasheet: BF16 1307.4 dense"),
    Peak(r"MI250X", 383.0, 383.0, "AMD Instinct MI250X datasheet: BF16 383"),
)


def find_peak(device_name: str) -> Peak | None:
    name = device_name.upper()
    for peak in PEAKS:
        if re.search(peak.pattern, name):
            return peak
    return None


def compute_precision(ds_config: dict[str, Any]) -> str:
    """The dtype the matmuls run in under a DeepSpeed config: bf16, fp16 or fp32."""
    if (ds_config.get("bf16") or {}).get("enabled"):
        return "bf16"
    if (ds_config.get("fp16") or {}).get("enabled"):
        return "fp16"
    autocast = ds_config.get("torch_autocast") or {}
    if autocast.get("enabled"):
        dtype = str(autocast.get("dtype", "bfloat16"))
        return "fp16" if dtype in ("float16", "torch.float16", "fp16", "half") else "bf16"
    return "fp32"


def peak_flops(device_name: str, precision: str) -> float | None:
    """Dense peak FLOP/s of one GPU for ``precision`` (bf16 / fp16), or None when the GPU
    is not in the table or the precision has no tensor-core peak here (fp32: DeepSpeed's
    fp32 matmuls may or may not use TF32, so no MFU is claimed for them)."""
    peak = find_peak(device_name)
    if peak is None:
        return None
    if precision == "bf16":
        return None if peak.bf16 is None else peak.bf16 * TERA
    if precision == "fp16":
        return peak.fp16 * TERA
    return None


@dataclass(frozen=True)
class CatalogGpu:
    """A GPU a user may plan for without having it: its name as NVML reports it and its
    memory. The same names find their peak in :data:`PEAKS` (a test keeps the two tables
    in step), so one list serves the MFU figure and the wizard's GPU picker."""

    name: str
    memory_gib: float  # as NVML/nvidia-smi report it, in GiB

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * 2**30)

    @property
    def label(self) -> str:
        return f"{self.name} · {self.memory_gib:g} GiB"


# nvidia-smi's "Total" memory (MiB / 1024) for each board; largest first within a family
GPU_CATALOG: tuple[CatalogGpu, ...] = (
    CatalogGpu("NVIDIA B200", 179.1),
    CatalogGpu("NVIDIA H200", 139.8),
    CatalogGpu("NVIDIA H100 80GB HBM3", 79.6),
    CatalogGpu("NVIDIA H100 PCIe", 79.6),
    CatalogGpu("NVIDIA A100-SXM4-80GB", 79.2),
    CatalogGpu("NVIDIA A100-SXM4-40GB", 39.4),
    CatalogGpu("NVIDIA L40S", 44.5),
    CatalogGpu("NVIDIA RTX 6000 Ada Generation", 47.5),
    CatalogGpu("NVIDIA RTX A6000", 47.5),
    CatalogGpu("NVIDIA A40", 44.5),
    CatalogGpu("NVIDIA A10", 22.1),
    CatalogGpu("NVIDIA L4", 22.0),
    CatalogGpu("NVIDIA GeForce RTX 4090", 23.6),
    CatalogGpu("NVIDIA GeForce RTX 3090", 23.7),
    CatalogGpu("Tesla V100-SXM2-32GB", 31.7),
    CatalogGpu("Tesla T4", 14.6),
    CatalogGpu("AMD Instinct MI300X", 191.5),
)


def catalog_gpu(name: str) -> CatalogGpu | None:
    """The catalog entry called ``name`` (exactly, case-insensitive)."""
    wanted = name.strip().upper()
    return next((g for g in GPU_CATALOG if g.name.upper() == wanted), None)
