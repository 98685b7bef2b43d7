"""The optimizer a rank hands DeepSpeed when the launch side decided on torch's fused AdamW.

Without a CUDA toolkit that matches torch, DeepSpeed's FusedAdam cannot be JIT-built
(``MissingCUDAException``), and where it can, the build is minutes of silence. For a config
ds-wizard built, the launch side then records ``optimizer: torch_fused_adamw`` in run.json
(``ds_wizard.core.runs.doctor.decide_optimizer``): the rank builds
``torch.optim.AdamW(fused=True)`` with the config's Adam settings and passes it to
``deepspeed.initialize`` as a client optimizer (ZeRO supports torch's AdamW), with the
config's optimizer section removed so DeepSpeed builds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ds_wizard.core.runs.doctor import OPT_TORCH_FUSED

# DeepSpeed's Adam parameters that torch.optim.AdamW takes as they are
ADAMW_KEYS = ("lr", "betas", "eps", "weight_decay", "amsgrad")


def adamw_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    opt = cfg.get("optimizer") or {}
    params = opt.get("params") or {}
    out = {k: params[k] for k in ADAMW_KEYS if k in params}
    if "betas" in out:
        out["betas"] = tuple(out["betas"])
    return out


def client_optimizer(decision: str | None, cfg: dict[str, Any],
                     groups: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], Any | None]:
    """(config for deepspeed.initialize, client optimizer or None) for run.json's decision."""
    if decision != OPT_TORCH_FUSED or not isinstance(cfg.get("optimizer"), dict):
        return cfg, None
    import torch

    optimizer = torch.optim.AdamW(list(groups), fused=True, **adamw_kwargs(cfg))
    return {k: v for k, v in cfg.items() if k != "optimizer"}, optimizer
