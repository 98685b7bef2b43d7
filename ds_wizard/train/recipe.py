"""The training recipe applied to either backend's model: activation checkpointing and
the optimizer's weight-decay groups (``docs/gpu-training.md`` explains the choices).

Both backends expose their Mamba blocks as ``model.backbone.layers``: transformers'
``MambaBlock``/``Mamba2Block`` (``forward(hidden_states, cache=None, attention_mask=None)``
→ hidden states) and mamba_ssm's ``Block`` (``forward(hidden_states, residual=None,
inference_params=None)`` → ``(hidden_states, residual)``). The checkpointing below wraps
whatever a block's forward takes and returns, so the two are treated the same way.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

# Parameters mamba marks ``_no_weight_decay`` (mamba_ssm's modules/mamba_simple.py and
# modules/mamba2.py set the attribute on these; transformers' port keeps the names but
# not the attribute, so the names are matched too).
NO_DECAY_NAMES: frozenset[str] = frozenset({"A_log", "D", "dt_bias"})


def mamba_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's Mamba blocks, in order."""
    backbone = getattr(model, "backbone", None)
    layers = getattr(backbone, "layers", None)
    if layers is None:
        raise TypeError(f"{type(model).__name__} has no backbone.layers: not a Mamba LM")
    return list(layers)


def enable_block_checkpointing(model: torch.nn.Module) -> int:
    """One ``torch.utils.checkpoint`` (non-reentrant) per Mamba block: during training
    each block keeps only its inputs and is re-run in backward. Returns the block count.

    Non-reentrant checkpointing recomputes inside autograd's saved-tensor hooks, so it
    works with inputs that do not require grad, keyword arguments and tuple outputs, and
    module hooks (ZeRO-3's parameter fetch) run again for the re-run, as they must.
    """
    blocks = mamba_blocks(model)
    for block in blocks:
        if getattr(block, "_ds_wizard_checkpointed", False):
            continue
        block.forward = _checkpointed(block, block.forward)
        block._ds_wizard_checkpointed = True
    return len(blocks)


def _checkpointed(block: torch.nn.Module, forward: Any) -> Any:
    @functools.wraps(forward)
    def run(*args: Any, **kwargs: Any) -> Any:
        if block.training and torch.is_grad_enabled():
            return checkpoint(forward, *args, use_reentrant=False, **kwargs)
        return forward(*args, **kwargs)

    return run


def _no_decay(module: torch.nn.Module, name: str, param: torch.nn.Parameter) -> bool:
    if getattr(param, "_no_weight_decay", False) or name in NO_DECAY_NAMES:
        return True
    if name == "bias":  # every bias: dt_proj's, conv1d's, and in/out_proj's when enabled
        return True
    if isinstance(module, torch.nn.Embedding):
        return True
    return "norm" in type(module).__name__.lower()  # RMSNorm, gated RMSNorm, LayerNorm


def weight_decay_groups(model: torch.nn.Module) -> list[dict[str, Any]]:
    """Two optimizer groups: the matrix weights (their weight decay comes from the
    DeepSpeed config's optimizer) and everything else at weight decay 0.

    No decay: mamba's ``_no_weight_decay`` parameters (A_log, D, dt bias), every bias, the
    norms' weights and the embedding (with tied embeddings, that is also the LM head).
    Decay: in_proj, x_proj, dt_proj and out_proj weights, the conv1d kernels, and an untied
    LM head. A tensor shared by two modules is placed once, by the first module owning it.
    """
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    seen: set[int] = set()
    for _, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            (no_decay if _no_decay(module, name, param) else decay).append(param)
    groups: list[dict[str, Any]] = [{"params": decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups
