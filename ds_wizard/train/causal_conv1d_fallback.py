"""A pure-PyTorch stand-in for the ``causal-conv1d`` package, used only when it is absent.

mamba-ssm imports ``causal_conv1d`` (``causal_conv1d_fn``, ``causal_conv1d_update``) and
``causal_conv1d.cpp_functions`` (the fused paths' forward/backward) inside ``try``; without
the package Mamba-2's default path calls ``None`` at the first forward and Mamba-1 falls
back to a path that keeps more activations. :func:`install` registers these functions
under those module names *before* mamba-ssm is imported, so both take their fused paths
with a slower convolution. The signatures follow causal-conv1d 1.5-1.7.

The convolution is depthwise and causal: for channel ``c`` and time ``t``

    out[b, c, t] = bias[c] + sum_k weight[c, k] * x[b, c, t - (W - 1) + k]

with ``x`` before 0 taken from ``initial_states`` (zeros without), and, with ``seq_idx``,
no tap reaching into a different sequence of a packed batch.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

import torch
import torch.nn.functional as F

MODULE = "causal_conv1d"


def _conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
          seq_idx: torch.Tensor | None, initial_states: torch.Tensor | None,
          silu: bool) -> torch.Tensor:
    """x (b, d, s), weight (d, w), bias (d,), seq_idx (b, s), initial_states (b, d, w-1)."""
    width = weight.shape[-1]
    if initial_states is None:
        padded = F.pad(x, (width - 1, 0))
    else:
        padded = torch.cat([initial_states.to(x.dtype), x], dim=-1)
    if seq_idx is None:
        out = F.conv1d(padded, weight.unsqueeze(1).to(x.dtype),
                       None if bias is None else bias.to(x.dtype), groups=x.shape[1])
    else:
        # taps from another sequence of a packed row count as zero
        windows = padded.unfold(-1, width, 1)  # (b, d, s, w)
        ids = F.pad(seq_idx, (width - 1, 0), value=-1).unfold(-1, width, 1)  # (b, s, w)
        same = (ids == seq_idx.unsqueeze(-1)).unsqueeze(1).to(x.dtype)
        out = (windows * same * weight.to(x.dtype)[None, :, None, :]).sum(-1)
        if bias is not None:
            out = out + bias.to(x.dtype)[None, :, None]
    return F.silu(out) if silu else out


def causal_conv1d_fwd_function(x: torch.Tensor, weight: torch.Tensor,
                               bias: torch.Tensor | None, seq_idx: torch.Tensor | None,
                               initial_states: torch.Tensor | None,
                               final_states_out: torch.Tensor | None,
                               silu_activation: bool) -> torch.Tensor:
    with torch.no_grad():
        if final_states_out is not None:
            width = weight.shape[-1]
            full = x if initial_states is None else torch.cat([initial_states, x], dim=-1)
            tail = F.pad(full, (max(0, width - 1 - full.shape[-1]), 0))[..., -(width - 1):]
            final_states_out.copy_(tail)
        return _conv(x, weight, bias, seq_idx, initial_states, silu_activation)


def causal_conv1d_bwd_function(x: torch.Tensor, weight: torch.Tensor,
                               bias: torch.Tensor | None, dout: torch.Tensor,
                               seq_idx: torch.Tensor | None,
                               initial_states: torch.Tensor | None,
                               dfinal_states: torch.Tensor | None, dx: torch.Tensor | None,
                               return_dinitial_states: bool, silu_activation: bool,
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None,
                                          torch.Tensor | None]:
    """(dx, dweight, dbias, dinitial_states), recomputing the forward under autograd."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        wg = weight.detach().requires_grad_(True)
        bg = None if bias is None else bias.detach().requires_grad_(True)
        ig = None
        if initial_states is not None:
            ig = initial_states.detach().requires_grad_(return_dinitial_states)
        out = _conv(xg, wg, bg, seq_idx, ig, silu_activation)
        inputs = [t for t in (xg, wg, bg) if t is not None]
        if ig is not None and return_dinitial_states:
            inputs.append(ig)
        grads = list(torch.autograd.grad(out, inputs, dout.to(out.dtype)))
    gx, gw = grads[0], grads[1]
    gb = grads[2] if bg is not None else None
    gi = grads[-1] if ig is not None and return_dinitial_states else None
    if dfinal_states is not None and dfinal_states.abs().sum() > 0:
        raise NotImplementedError("the causal-conv1d fallback does not take dfinal_states; "
                                  "install causal-conv1d")
    if dx is not None:
        dx.copy_(gx)
        gx = dx
    return gx, gw.to(weight.dtype), None if gb is None else gb.to(bias.dtype), gi


def causal_conv1d_fn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                     seq_idx: torch.Tensor | None = None,
                     initial_states: torch.Tensor | None = None,
                     return_final_states: bool = False,
                     final_states_out: torch.Tensor | None = None,
                     activation: str | None = None) -> object:
    """The differentiable entry point (``causal_conv1d.causal_conv1d_fn``)."""
    if activation not in (None, "silu", "swish"):
        raise NotImplementedError("activation must be None, silu or swish")
    out = _conv(x, weight, bias, seq_idx, initial_states, activation is not None)
    if not return_final_states:
        return out
    width = weight.shape[-1]
    full = x if initial_states is None else torch.cat([initial_states, x], dim=-1)
    final = F.pad(full, (max(0, width - 1 - full.shape[-1]), 0))[..., -(width - 1):]
    if final_states_out is not None:
        final_states_out.copy_(final.detach())
        final = final_states_out
    return out, final


def causal_conv1d_update_function(x: torch.Tensor, conv_state: torch.Tensor,
                                  weight: torch.Tensor, bias: torch.Tensor | None,
                                  silu_activation: bool, cache_seqlens: torch.Tensor | None,
                                  conv_state_indices: torch.Tensor | None) -> torch.Tensor:
    """One decoding step (x (b, d) or (b, d, l)), rolling ``conv_state`` (b, d, state_len)."""
    if cache_seqlens is not None or conv_state_indices is not None:
        raise NotImplementedError("the causal-conv1d fallback has no cache_seqlens or "
                                  "conv_state_indices; install causal-conv1d")
    squeeze = x.dim() == 2
    xs = x.unsqueeze(-1) if squeeze else x
    width = weight.shape[-1]
    full = torch.cat([conv_state.to(xs.dtype), xs], dim=-1)
    out = _conv(full[..., -(xs.shape[-1] + width - 1):], weight, bias, None, None,
                silu_activation)[..., width - 1:]
    conv_state.copy_(full[..., -conv_state.shape[-1]:])
    return out.squeeze(-1) if squeeze else out


def causal_conv1d_update(x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor,
                         bias: torch.Tensor | None = None, activation: str | None = None,
                         cache_seqlens: torch.Tensor | None = None,
                         conv_state_indices: torch.Tensor | None = None) -> torch.Tensor:
    return causal_conv1d_update_function(x, conv_state, weight, bias, activation is not None,
                                         cache_seqlens, conv_state_indices)


def install(replace_broken: bool = False) -> bool:
    """Register the fallback as ``causal_conv1d`` unless the real package is installed.

    ``replace_broken``: the caller tried the real package and its import failed (built
    against another torch, say): register the fallback although it is on disk.
    Returns True when the fallback is (now) in place. Call it before importing mamba_ssm:
    mamba-ssm binds these names at import time.
    """
    current = sys.modules.get(MODULE)
    if current is not None:
        return bool(getattr(current, "__ds_wizard_fallback__", False))
    if not replace_broken and importlib.util.find_spec(MODULE) is not None:
        return False
    pkg = types.ModuleType(MODULE)
    # a spec, so importlib.util.find_spec("causal_conv1d") answers instead of raising
    pkg.__spec__ = importlib.machinery.ModuleSpec(MODULE, None, is_package=True)
    pkg.__ds_wizard_fallback__ = True  # type: ignore[attr-defined]
    pkg.__path__ = []  # type: ignore[attr-defined]  # a package, so submodules resolve
    pkg.causal_conv1d_fn = causal_conv1d_fn  # type: ignore[attr-defined]
    pkg.causal_conv1d_update = causal_conv1d_update  # type: ignore[attr-defined]
    cpp = types.ModuleType(f"{MODULE}.cpp_functions")
    cpp.causal_conv1d_fwd_function = causal_conv1d_fwd_function  # type: ignore[attr-defined]
    cpp.causal_conv1d_bwd_function = causal_conv1d_bwd_function  # type: ignore[attr-defined]
    cpp.causal_conv1d_update_function = causal_conv1d_update_function  # type: ignore[attr-defined]
    pkg.cpp_functions = cpp  # type: ignore[attr-defined]
    sys.modules[MODULE] = pkg
    sys.modules[cpp.__name__] = cpp
    return True
