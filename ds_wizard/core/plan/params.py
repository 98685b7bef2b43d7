"""Exact, closed-form parameter counts for Mamba-1 and Mamba-2 language models.

The formulas follow the module definitions in state-spaces/mamba
(``modules/mamba_simple.py``, ``modules/mamba2.py``, ``models/mixer_seq_simple.py``);
transformers' ``MambaForCausalLM`` / ``Mamba2ForCausalLM`` build the same tensors. Tests
instantiate those classes on the ``meta`` device and compare numel sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ds_wizard.core.presets.schema import ModelSpec


def padded_vocab(vocab_size: int, multiple: int) -> int:
    """mamba-ssm rounds the vocabulary up so the embedding GEMMs stay aligned."""
    if multiple <= 1:
        return vocab_size
    return math.ceil(vocab_size / multiple) * multiple


def dt_rank(d_model: int) -> int:
    """mamba-ssm's ``dt_rank="auto"``: ceil(d_model / 16)."""
    return math.ceil(d_model / 16)


@dataclass(frozen=True)
class ParamBreakdown:
    embedding: int
    per_layer: int
    n_layer: int
    final_norm: int
    lm_head: int  # 0 when tied to the embedding
    largest_layer: int  # the largest single weight tensor, used by ZeRO-3 estimates

    @property
    def total(self) -> int:
        return self.embedding + self.per_layer * self.n_layer + self.final_norm + self.lm_head


def mamba1_block(
    d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
    *, bias: bool = False, conv_bias: bool = True,
) -> int:
    """One Mamba-1 block: the mixer plus its pre-norm (RMSNorm, weight only)."""
    d, n, k = d_model, d_state, d_conv
    e = expand * d
    r = dt_rank(d)
    in_proj = 2 * e * d + (2 * e if bias else 0)
    conv = e * k + (e if conv_bias else 0)
    x_proj = e * (r + 2 * n)
    dt_proj = e * r + e
    a_log = e * n
    d_skip = e
    out_proj = e * d + (d if bias else 0)
    norm = d
    return in_proj + conv + x_proj + dt_proj + a_log + d_skip + out_proj + norm


def mamba2_block(
    d_model: int, d_state: int = 128, d_conv: int = 4, expand: int = 2,
    headdim: int = 64, ngroups: int = 1,
    *, bias: bool = False, conv_bias: bool = True,
) -> int:
    """One Mamba-2 block: the mixer (with its gated RMSNorm) plus the block's pre-norm."""
    d, n, k = d_model, d_state, d_conv
    e = expand * d
    if e % headdim:
        raise ValueError(f"expand × d_model = {e} must be a multiple of headdim {headdim}")
    h = e // headdim
    d_in_proj = 2 * e + 2 * ngroups * n + h
    conv_dim = e + 2 * ngroups * n
    in_proj = d * d_in_proj + (d_in_proj if bias else 0)
    conv = conv_dim * k + (conv_dim if conv_bias else 0)
    dt_bias = a_log = d_skip = h
    gated_norm = e
    out_proj = e * d + (d if bias else 0)
    norm = d
    return in_proj + conv + dt_bias + a_log + d_skip + gated_norm + out_proj + norm


def breakdown(spec: ModelSpec) -> ParamBreakdown:
    vocab = padded_vocab(spec.vocab_size, spec.pad_vocab_size_multiple)
    d = spec.d_model
    e = spec.expand * d
    if spec.arch == "mamba1":
        block = mamba1_block(
            d, spec.d_state, spec.d_conv, spec.expand, bias=spec.bias, conv_bias=spec.conv_bias
        )
        in_proj = 2 * e * d
    else:
        block = mamba2_block(
            d, spec.d_state, spec.d_conv, spec.expand, spec.headdim, spec.ngroups,
            bias=spec.bias, conv_bias=spec.conv_bias,
        )
        in_proj = d * (2 * e + 2 * spec.ngroups * spec.d_state + e // spec.headdim)
    embedding = vocab * d
    return ParamBreakdown(
        embedding=embedding,
        per_layer=block,
        n_layer=spec.n_layer,
        final_norm=d,
        lm_head=0 if spec.tie_embeddings else embedding,
        largest_layer=max(embedding, in_proj),
    )


def matmul_weights_per_layer(spec: ModelSpec) -> int:
    """Elements of the weights one block feeds to matmuls: in_proj and out_proj, plus
    Mamba-1's x_proj and dt_proj. Under ``torch.autocast`` each is cast to 16 bits and
    the cast is saved for backward."""
    d = spec.d_model
    e = spec.expand * d
    if spec.arch == "mamba1":
        r = dt_rank(d)
        return 2 * e * d + e * (r + 2 * spec.d_state) + e * r + e * d
    return d * (2 * e + 2 * spec.ngroups * spec.d_state + e // spec.headdim) + e * d


def count_params(spec: ModelSpec) -> int:
    """Total trainable parameters, counting a tied LM head once."""
    return breakdown(spec).total


def scan_flops_per_token(spec: ModelSpec) -> float:
    """Forward FLOPs per token of the sequence mixing that is not a weight matmul.

    * Mamba-1's selective scan: about 9·E·N per token per layer (the Mamba paper's count).
    * Mamba-2's SSD, per chunk of ``cs`` tokens: C·Bᵀ (2·cs·G·N per token), its masked
      product with x (2·cs·E), the chunk states Bᵀ·x (2·E·N) and their output C·state
      (2·E·N), i.e. 2·cs·(E + G·N) + 4·E·N per token per layer. For the shipped Mamba-2
      presets (130M to 2.7B) this is 6-13% of all training FLOPs, not 1-2%.
    """
    e, n = spec.expand * spec.d_model, spec.d_state
    if spec.arch == "mamba2":
        per_layer = 2 * spec.chunk_size * (e + spec.ngroups * n) + 4 * e * n
    else:
        per_layer = 9 * e * n
    return float(per_layer * spec.n_layer)


def flops_per_token(spec: ModelSpec) -> float:
    """Training FLOPs per token, for MFU: 6 per matmul weight (forward 2, backward 4) plus
    3 × the scan's forward FLOPs.

    The input embedding is a lookup, not a matmul: with tied embeddings its one tensor is
    the LM head's matmul weight and is counted once; an untied embedding is left out.
    """
    pb = breakdown(spec)
    matmul_params = pb.total - (pb.embedding if pb.lm_head else 0)
    return 6 * matmul_params + 3 * scan_flops_per_token(spec)


def human_count(n: int) -> str:
    """6945935360 → '6.95B'; keeps three significant digits."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}" if n / scale < 100 else f"{n / scale:.0f}{unit}"
    return str(n)
