"""The model backends and the one rule that picks the kernels a run will use, for the
planner (which sizes memory for them) and the rank alike."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

# The one list of model backends. "auto" picks mamba_ssm where it imports on CUDA, else
# transformers; the memory model knows only the concrete ones.
BACKENDS: tuple[str, ...] = ("auto", "mamba_ssm", "transformers")
KERNEL_BACKENDS: tuple[str, ...] = tuple(b for b in BACKENDS if b != "auto")
DEFAULT_BACKEND = "auto"
# what the memory estimate assumes when nobody says (the GPU path's kernels)
DEFAULT_KERNEL_BACKEND = "mamba_ssm"


# The modules the mamba_ssm backend really runs, per architecture, and what to install for
# each. mamba-ssm 2.3's package __init__ imports its selective-scan extension, and Mamba-1
# runs it; Mamba-2 runs Triton kernels. causal-conv1d is not listed: without it ds-wizard's
# PyTorch stand-in (train/causal_conv1d_fallback.py) keeps both on their fused paths.
KERNEL_MODULES: dict[str, tuple[str, ...]] = {
    "mamba1": ("mamba_ssm", "selective_scan_cuda"),
    "mamba2": ("mamba_ssm", "selective_scan_cuda", "triton"),
}
KERNEL_PACKAGES: dict[str, str] = {
    "mamba_ssm": "mamba-ssm",
    "selective_scan_cuda": "mamba-ssm's CUDA extension selective_scan_cuda",
    "triton": "triton",
    "causal_conv1d": "causal-conv1d",
}
# mamba-ssm >= 2.3 and causal-conv1d build sm_75 and newer only
MIN_KERNEL_CC = (7, 5)
GPU_INSTALL_HINT = ("pip install --no-build-isolation 'mamba-ssm[causal-conv1d]' "
                    "(docs/gpu.md), or --backend transformers")


def _module_found(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missing_kernel_modules(arch: str,
                           found: Callable[[str], bool] | None = None) -> list[str]:
    """The modules of :data:`KERNEL_MODULES` for ``arch`` that are not installed here
    (found without importing them: no torch, no CUDA initialisation)."""
    found = found or _module_found
    return [m for m in KERNEL_MODULES.get(arch, KERNEL_MODULES["mamba1"]) if not found(m)]


@dataclass(frozen=True)
class BackendDecision:
    """The kernels a run will use, and why."""

    name: str  # one of KERNEL_BACKENDS
    reason: str
    conv_fallback: bool = False  # causal-conv1d absent: ds-wizard's PyTorch conv stands in


def resolve_backend(requested: str, *, cuda: bool, arch: str, here: bool = True,
                    compute_capability: tuple[int, int] | None = None,
                    found: Callable[[str], bool] | None = None) -> BackendDecision:
    """What ``requested`` becomes: the one rule for the planner and the rank.

    ``here``: the ranks run on this machine, so its installed packages decide. Planning
    for another machine (no GPU here) assumes the GPU path's kernels are there.
    """
    found = found or _module_found
    if requested in KERNEL_BACKENDS:
        return BackendDecision(requested, f"requested with --backend {requested}",
                               requested == "mamba_ssm" and here and not found("causal_conv1d"))
    if not cuda:
        return BackendDecision("transformers", "CPU ranks: transformers' PyTorch Mamba path")
    if not here:
        return BackendDecision(DEFAULT_KERNEL_BACKEND,
                               "planning for a GPU machine with mamba-ssm's kernels")
    if compute_capability is not None and compute_capability < MIN_KERNEL_CC:
        cc = f"{compute_capability[0]}.{compute_capability[1]}"
        return BackendDecision("transformers", f"compute capability {cc} is below the "
                               f"{MIN_KERNEL_CC[0]}.{MIN_KERNEL_CC[1]} mamba-ssm's kernels "
                               "are built for: transformers' PyTorch path")
    missing = missing_kernel_modules(arch, found)
    if missing:
        names = ", ".join(KERNEL_PACKAGES[m] for m in missing)
        return BackendDecision("transformers", f"{names} not installed: transformers' "
                               f"PyTorch path (slower, more memory); {GPU_INSTALL_HINT}")
    if not found("causal_conv1d"):
        return BackendDecision("mamba_ssm", "mamba-ssm's kernels; causal-conv1d is not "
                               "installed, so ds-wizard's PyTorch causal conv stands in "
                               "(slower, same memory)", conv_fallback=True)
    return BackendDecision("mamba_ssm", "mamba-ssm's kernels with causal-conv1d")
