"""Which DeepSpeed ops a launch will JIT-build on first use, and how to avoid them on CPU.

DeepSpeed compiles some C++ ops the first time a rank needs them (torch's
``cpp_extension.load`` into the torch-extensions cache). On a fresh machine this is minutes
of silence before the first step. The CPU path needs none of them:

- ``deepspeed_shm_comm`` (``deepspeed/comm/torch.py``: ``TorchBackend.__init__`` calls
  ``build_shm_op`` whenever ``deepspeed.ops.__compatible_ops__`` says it can build it). Gloo
  does the same collectives without it; the rank marks the op unavailable before
  ``init_distributed`` (``ds_wizard.train.ds_setup.avoid_cpu_jit_ops``).
- ``fused_adam`` (CPU build, ``op_builder/cpu/fused_adam.py``) or ``cpu_adam`` (ZeRO
  offload), chosen in ``engine.get_optimizer_configuration``. The optimizer parameter
  ``torch_adam: true`` makes DeepSpeed use ``torch.optim.AdamW`` instead, the same update.

What is left to build is announced before the ranks start, with an estimate. Nothing here
imports torch or deepspeed: the cache and DeepSpeed's prebuilt-op list are read as files.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHM_COMM = "deepspeed_shm_comm"
FUSED_ADAM = "fused_adam"
CPU_ADAM = "cpu_adam"
# seconds to compile each op, measured from an empty cache on a busy 2-core machine
# (benchmarks/first_run.md); scaled down by the cores available
BUILD_SECONDS_2_CORES = {SHM_COMM: 130, FUSED_ADAM: 160, CPU_ADAM: 160}
ADAM_TYPES = ("adam", "adamw")


@dataclass(frozen=True)
class JitBuild:
    """One op DeepSpeed will compile before the first step."""

    name: str
    why: str
    estimate_s: float


def _optimizer(cfg: Mapping[str, Any]) -> Mapping[str, Any] | None:
    opt = cfg.get("optimizer")
    return opt if isinstance(opt, Mapping) else None


def uses_deepspeed_adam(cfg: Mapping[str, Any]) -> bool:
    """An Adam/AdamW from the config that DeepSpeed would run with its own compiled op."""
    opt = _optimizer(cfg)
    if opt is None or str(opt.get("type", "")).lower() not in ADAM_TYPES:
        return False
    params = opt.get("params")
    return not (isinstance(params, Mapping) and params.get("torch_adam"))


def with_torch_adam(cfg: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """The config with ``torch_adam: true`` for CPU ranks; (copy, whether it changed).

    A ``torch_adam`` the config already sets (even false) is the user's choice and kept.
    """
    out = copy.deepcopy(dict(cfg))
    opt = _optimizer(out)
    if opt is None or str(opt.get("type", "")).lower() not in ADAM_TYPES:
        return out, False
    params = opt.get("params")
    if isinstance(params, Mapping) and "torch_adam" in params:
        return out, False
    out["optimizer"] = {**opt, "params": {**(params or {}), "torch_adam": True}}
    return out, True


def _offloads_optimizer(cfg: Mapping[str, Any]) -> bool:
    zero = cfg.get("zero_optimization")
    if not isinstance(zero, Mapping):
        return False
    off = zero.get("offload_optimizer")
    return isinstance(off, Mapping) and off.get("device") in ("cpu", "nvme")


def extension_dirs(env: Mapping[str, str] | None = None) -> list[Path]:
    """Where torch's cpp_extension caches builds (``_get_build_directory``'s rule)."""
    env = os.environ if env is None else env
    if env.get("TORCH_EXTENSIONS_DIR"):
        return [Path(env["TORCH_EXTENSIONS_DIR"])]
    cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "torch_extensions"
    # py311_cpu, py311_cu124 …: which one torch picks depends on its CUDA build
    tag = f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}_"
    if not cache.is_dir():
        return []
    return sorted(p for p in cache.iterdir() if p.name.startswith(tag))


def is_cached(name: str, env: Mapping[str, str] | None = None) -> bool:
    return any((d / name / f"{name}.so").is_file() for d in extension_dirs(env))


def prebuilt_ops() -> dict[str, bool]:
    """DeepSpeed's ``installed_ops`` (ops compiled at install time), read without importing
    deepspeed; empty when it cannot be read."""
    spec = importlib.util.find_spec("deepspeed")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / "git_version_info_installed.py"
    from ds_wizard.core.base.errors import DsWizardError
    from ds_wizard.core.base.fsio import read_text

    try:
        text = read_text(path, limit=1 << 20, what="DeepSpeed build record")
    except DsWizardError:
        return {}
    for line in text.splitlines():
        if line.startswith("installed_ops"):
            try:
                value = ast.literal_eval(line.split("=", 1)[1].strip())
            except (ValueError, SyntaxError):
                return {}
            return value if isinstance(value, dict) else {}
    return {}


def expected_builds(
    accelerator: str,
    cfg: Mapping[str, Any],
    *,
    skip_shm: bool = True,
    env: Mapping[str, str] | None = None,
    cpu_count: int | None = None,
) -> list[JitBuild]:
    """The ops the ranks will compile before their first step (cached ones left out).

    ``accelerator`` is ``"cpu"`` or ``"cuda"``; ``skip_shm`` says the ranks turn the shm
    op off (ds-wizard's own trainer does on CPU).
    """
    wanted: list[tuple[str, str]] = []
    if accelerator == "cpu" and not skip_shm:
        wanted.append((SHM_COMM, "shared-memory collectives for CPU ranks"))
    if uses_deepspeed_adam(cfg):
        if _offloads_optimizer(cfg):
            wanted.append((CPU_ADAM, "DeepSpeed's CPU Adam for the offloaded optimizer"))
        else:
            wanted.append((FUSED_ADAM, "DeepSpeed's fused Adam"))
    prebuilt = prebuilt_ops()
    cores = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    scale = 2 / max(1, min(cores, 8))  # ninja builds a few files in parallel at most
    return [JitBuild(name, why, BUILD_SECONDS_2_CORES[name] * scale)
            for name, why in wanted
            if not prebuilt.get(name) and not is_cached(name, env)]


def first_run_notice(builds: list[JitBuild]) -> str | None:
    """One line for the user before the ranks start, or None when nothing is built."""
    if not builds:
        return None
    total = sum(b.estimate_s for b in builds)
    names = ", ".join(b.name for b in builds)
    low, high = max(1, round(total * 0.6 / 60)), max(2, round(total * 1.5 / 60))
    return (f"first run: DeepSpeed will compile {names} before the first step "
            f"(about {low}–{high} min here; cached afterwards in the torch-extensions cache)")


def clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else \
        f"{s // 60:02d}:{s % 60:02d}"
