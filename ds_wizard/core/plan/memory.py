"""Per-GPU memory for training a Mamba model under DeepSpeed: a calculator to trust before launch.

Four parts, each a pure function of the preset and the settings (no torch import):

* **model states** (params, grads, optimizer) per ZeRO stage, precision, offload and
  data-parallel size. For the cases DeepSpeed's own estimators cover, the numbers equal
  ``estimate_zero2_model_states_mem_needs`` / ``estimate_zero3_model_states_mem_needs``
  (a test calls them); ZeRO-0/1 follow from the same byte counts.
* **activations** saved for backward for one micro-batch, per backend:
  ``mamba_ssm`` (the fused CUDA kernels) and ``transformers`` (its pure-PyTorch path,
  which is what runs on CPU, and is measured exactly by a test).
* **logits and loss buffers** (vocab × tokens, upcast to fp32 for the loss).
* **overhead**: CUDA context, DeepSpeed's communication buckets and allocator fragmentation.

Every constant is defined once below, with where it comes from.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ds_wizard.core.base.defaults import HEADROOM
from ds_wizard.core.plan.backends import KERNEL_BACKENDS
from ds_wizard.core.plan.params import (
    breakdown,
    dt_rank,
    matmul_weights_per_layer,
    padded_vocab,
)
from ds_wizard.core.presets.rules import check_offload, preset_precision
from ds_wizard.core.presets.schema import ModelSpec, PresetSpec

Backend = Literal["mamba_ssm", "transformers"]
BACKENDS: tuple[str, ...] = KERNEL_BACKENDS  # the concrete ones of runspec.BACKENDS
PRECISIONS: tuple[str, ...] = ("bf16", "fp16", "fp32", "autocast")
DEFAULT_HEADROOM = HEADROOM

GiB = 1 << 30

# --------------------------------------------------------------------------------------
# Model-state bytes per parameter.
#
# Mixed precision (bf16/fp16) keeps, per parameter: 2 B 16-bit params, 2 B 16-bit grads,
# 4 B fp32 grads (the partition DeepSpeed reduces into), 4 B fp32 master params and
# 8 B Adam moments (momentum + variance). That is DeepSpeed's own count, quoted from
# ``deepspeed/runtime/zero/stage_1_and_2.py``::
#
#     # GPU's total_params multipliers: 2 = params_16bit,
#     # 18 = 2_grads_16bit + 4_grads_32bit + 4_params_32bit + 8_optimizer_states_32bit
#     gpu_mem = 2 * total_params + int(18 * total_params / total_gpus)   # no offload
#     gpu_mem = 2 * total_params                                         # cpu_offload
#
# fp32 and torch_autocast (fp32 params, bf16 compute) keep 4 B params and 4 B grads with
# no separate fp32 grad buffer; ZeRO's optimizer still clones its own fp32 partition
# (``single_partition_of_fp32_groups`` / ``fp32_partitioned_groups_flat`` are ``.clone()``s),
# so a 4 B master copy exists from stage 1 up. Without ZeRO the torch optimizer steps
# the params in place: 4 + 4 + 8 = 16 B.
# --------------------------------------------------------------------------------------
ADAM_BYTES = 8
MASTER_BYTES = 4
FP32_GRAD_BYTES = 4
# DeepSpeed's ZeRO-3 estimator (``deepspeed/runtime/zero/stage3.py``)::
#
#     largest_layer_memory = (4 * largest_layer_params)
#     gpu_mem = largest_layer_memory + int(18 * total_params / total_gpus)  # no offload
#     gpu_mem = largest_layer_memory + int(2 * total_params / total_gpus)   # offload optimizer
#     gpu_mem = largest_layer_memory                                        # offload both
#
# Its 18 B/param shard does not leave room for a full 4 B fp32 grad shard next to the
# 2 B param shard: stage 3 materialises fp32 grads one optimizer sub-group at a time
# (``_prepare_fp32_grad_for_sub_group``). We keep DeepSpeed's total and book 2 B for them.
ZERO3_FP32_GRAD_BYTES = 2
# DeepSpeed's CPU-side estimates multiply by this "additional_buffer_factor" default.
DS_CPU_BUFFER_FACTOR = 1.5

# --------------------------------------------------------------------------------------
# Overhead outside the model: not in any saved-tensor count.
# --------------------------------------------------------------------------------------
# CUDA context + cuBLAS/cuDNN workspaces + NCCL's own buffers, per process. nvidia-smi shows
# 0.5-1 GiB per rank before the first tensor; torch.cuda.max_memory_allocated never sees it.
CUDA_CONTEXT_BYTES = 1 * GiB
# Caching-allocator fragmentation: reserved minus allocated at the peak of a training step,
# typically a few per cent on a steady loop.
FRAGMENTATION_FRACTION = 0.05
# DeepSpeed's gradient buckets (``runtime/zero/config.py`` defaults; our configs keep them):
# ZeRO-1/2 allocate ``reduce_bucket_size`` elements per buffer when contiguous_gradients is on,
# two buffers with overlap_comm (``setup_buckets`` in stage_1_and_2.py); ZeRO-1 stages fp32,
# ZeRO-2 the 16-bit dtype. ZeRO-3 keeps one 16-bit reduce bucket plus the prefetch bucket.
DS_REDUCE_BUCKET_ELEMS = 500_000_000
DS_PREFETCH_BUCKET_ELEMS = 50_000_000

# --------------------------------------------------------------------------------------
# Activations. a = bytes of an activation (2 for bf16/fp16, 4 for fp32; torch_autocast
# computes in bf16, so 2). d = d_model, E = expand·d, N = d_state, R = dt_rank, T = tokens
# in the micro-batch (micro × seq_len). All counts are bytes per token unless noted.
# --------------------------------------------------------------------------------------
# mamba-ssm kernel path (state-spaces/mamba). Per layer:
#   * fused add+RMSNorm (``ops/triton/layer_norm.py``) saves the fp32 residual (4·d, with
#     residual_in_fp32=True) and rstd (4);
#   * in_proj (``in_proj.weight @ hidden``) saves its input: a·d;
#   * ``MambaInnerFn`` with checkpoint_lvl=1 saves xz (2E·a), x_dbl ((R+2N)·a), contiguous
#     B and C (2N·a), the un-gated scan output ``out`` (E·a) and the scan intermediates,
#     batch × E × ceil(L/2048) × 2N in fp32; conv1d_out and delta are set to None and
#     recomputed in backward.
#   Mamba-2 (``ssd_combined.py``, MambaSplitConv1dScanCombinedFn) saves zxbcdt
#   ((2E + 2GN + H)·a), out_x (E·a) and rstd (4·G); everything else is recomputed.
# With E = 2d this is the 18·d bytes/token/layer (bf16) usually quoted for Mamba.
SCAN_CHUNK = 2048  # selective_scan_cuda keeps one state checkpoint per 2048 steps
SCAN_STATE_COPIES = 2  # ... as the scan's (decay, state) pair: 2N floats per channel
# Backward working set of the one layer being differentiated (mamba-ssm): recomputed
# conv1d_out and delta, dxz (2E), dout_y, dconv1d_out, ddelta and out_z: 8·E·a, plus the
# fp32 residual-stream gradient in and out (2 × 4·d).
MAMBA_SSM_BWD_E_COPIES = 8
RESIDUAL_GRAD_COPIES = 2
# transformers' pure-PyTorch path: counted op by op from MambaMixer.forward
# (``mamba_selective_scan`` recurrent loop, i.e. use_mambapy=False) and Mamba2Mixer.forward
# (``mamba2_chunk_scan``); see _torch_layer_* below. mambapy's parallel scan, when installed
# and enabled, saves a different set. The backward working set is about one layer's worth.
TORCH_BWD_LAYER_FRACTION = 1.0
# Loss: HF ForCausalLM returns ``lm_head(...).float()`` and keeps it in the output (4·V);
# cross_entropy saves the fp32 log_softmax (4·V); backward holds its incoming grad and the
# grad it produces (2 × 4·V) at the same time. mamba-ssm returns logits in the model dtype
# (a·V) and the training loop upcasts for the loss (temporary).
LOGSOFTMAX_BYTES = 4
LOSS_GRAD_BUFFERS = 2
# torch_autocast keeps fp32 params and casts each matmul weight to bf16 on use; autograd
# saves the cast for backward (F.linear; mamba-ssm's MambaInnerFn casts x_proj/dt_proj/
# out_proj itself and saves the casts, ssd_combined.py saves outproj_weight's). So 2 bytes
# per matmul weight live from forward to backward, on every rank: ZeRO shards the fp32
# parameters, not these copies. With checkpointing, only the LM head's copy is saved in
# forward; a block's copies exist while that block is re-run.
AUTOCAST_COPY_BYTES = 2


@dataclass(frozen=True)
class ModelStates:
    """Model-state bytes on one GPU (and DeepSpeed's CPU estimate per node when offloading)."""

    params: int
    grads: int
    optimizer: int
    cpu_per_node: int = 0

    @property
    def gpu_total(self) -> int:
        return self.params + self.grads + self.optimizer


def _state_bytes(precision: str, zero_stage: int) -> tuple[int, int, int, int]:
    """(param, grad, fp32 grad, master) bytes per parameter for a precision."""
    if precision in ("bf16", "fp16"):
        return 2, 2, FP32_GRAD_BYTES, MASTER_BYTES
    if precision in ("fp32", "autocast"):
        return 4, 4, 0, (MASTER_BYTES if zero_stage >= 1 else 0)
    raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")


def model_states(
    total_params: int,
    largest_layer_params: int,
    *,
    zero_stage: int,
    precision: str = "bf16",
    offload_optimizer: bool = False,
    offload_param: bool = False,
    world_size: int = 1,
    gpus_per_node: int | None = None,
) -> ModelStates:
    """Params, grads and optimizer state on each GPU.

    ``world_size`` is the data-parallel size (all GPUs across nodes); ``gpus_per_node``
    only matters for the CPU-side figure.
    """
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"ZeRO stage must be 0, 1, 2 or 3, got {zero_stage}")
    if world_size < 1:
        raise ValueError(f"world size must be >= 1, got {world_size}")
    check_offload(zero_stage, offload_optimizer, offload_param)
    p_b, g_b, g32_b, m_b = _state_bytes(precision, zero_stage)
    P, G, L = total_params, world_size, largest_layer_params  # DeepSpeed's names
    per_node = gpus_per_node or G
    nodes = max(1, G // per_node)

    def shard(nbytes: int) -> int:
        return int(nbytes * P / G)

    cpu = 0
    if zero_stage == 0:
        params, grads, opt = p_b * P, (g_b + g32_b) * P, (m_b + ADAM_BYTES) * P
    elif zero_stage in (1, 2):
        params = p_b * P
        full_grads = zero_stage == 1  # ZeRO-1 reduces full 16-bit grads, then keeps its slice
        if offload_optimizer:
            # grads are copied out bucket by bucket; fp32 grads, master and Adam live on CPU
            grads = g_b * P if full_grads else 0
            opt = 0
            cpu = int(P * max(4 * G, 16) * DS_CPU_BUFFER_FACTOR)
        else:
            grads = (g_b * P + shard(g32_b)) if full_grads else shard(g_b + g32_b)
            opt = shard(m_b + ADAM_BYTES)
            cpu = int(P * 4 * per_node * DS_CPU_BUFFER_FACTOR)
    else:
        g32_b3 = ZERO3_FP32_GRAD_BYTES if g32_b else 0
        # the gathered largest layer and its full grad: DeepSpeed's 4·L in 16-bit
        layer_p, layer_g = p_b * L, g_b * L
        params = layer_p + (0 if offload_param else shard(p_b))
        if offload_optimizer:
            grads, opt = layer_g, 0
            factor = 18 if offload_param else 16
            cpu = int(P * factor / nodes * DS_CPU_BUFFER_FACTOR)
        else:
            grads = layer_g + shard(g_b + g32_b3)
            opt = shard(m_b + ADAM_BYTES)
            cpu = int(L * 4 * per_node * DS_CPU_BUFFER_FACTOR)
    return ModelStates(int(params), int(grads), int(opt), cpu)


# --------------------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Activations:
    """Bytes for one micro-batch on one GPU."""

    per_layer: int  # saved for backward by one layer
    layers: int  # all layers (checkpointed: the layer inputs plus one layer re-run)
    checkpointing: bool
    head: int  # embedding indices, final norm, lm-head input, labels
    logits_saved: int  # the fp32 log-softmax the loss keeps for backward
    logits_peak: int  # logits + loss buffers at their peak (includes logits_saved)
    working: int  # the backward working set of the layer being differentiated
    # autocast's 16-bit weight copies saved for backward: all of them after the forward,
    # and (checkpointed) the one block being re-run on top of the LM head's at the peak
    autocast_saved: int = 0
    autocast_peak: int = 0

    @property
    def saved(self) -> int:
        """What ``torch.autograd.graph.saved_tensors_hooks`` sees after the forward (with
        checkpointing the re-run layer exists only during backward)."""
        rerun = self.per_layer if self.checkpointing else 0
        return self.layers - rerun + self.head + self.logits_saved + self.autocast_saved


def act_bytes(precision: str) -> int:
    return 4 if precision == "fp32" else 2


def _mamba_ssm_layer(m: ModelSpec, micro: int, seq: int, a: int) -> int:
    d, e, n = m.d_model, m.expand * m.d_model, m.d_state
    tokens = micro * seq
    norm = 4 * d + 4 + a * d  # fp32 residual + rstd, in_proj input
    if m.arch == "mamba1":
        r = dt_rank(d)
        inner = (2 * e + (r + 2 * n) + 2 * n + e) * a
        scan = micro * e * math.ceil(seq / SCAN_CHUNK) * SCAN_STATE_COPIES * n * 4
        return tokens * (norm + inner) + scan
    h = e // m.headdim
    zxbcdt = 2 * e + 2 * m.ngroups * n + h
    return tokens * (norm + (zxbcdt + e) * a + 4 * m.ngroups)


def _torch_norm(d: int, a: int) -> int:
    # MambaRMSNorm: pow/mul save the fp32 input (4d) and rstd (4); weight * x.to(a) saves
    # x.to(a) (a·d); in_proj saves the norm output (a·d).
    return 4 * d + 4 + 2 * a * d


def _torch_layer_mamba1(m: ModelSpec, micro: int, seq: int, a: int,
                        mambapy: bool = False) -> int:
    """transformers MambaMixer.forward on the ``mamba_selective_scan`` recurrent loop, or on
    mambapy's parallel scan (``use_mambapy=True``, fp32 only in transformers 5)."""
    d, e, n, k = m.d_model, m.expand * m.d_model, m.d_state, m.d_conv
    r = dt_rank(d)
    t = micro * seq
    low = a == 2
    b = _torch_norm(d, a) * t
    b += 2 * e * a * t  # xz = in_proj(x): conv1d input and silu(z) input
    b += e * a * micro * (seq + k - 1)  # conv1d output before [:seq_len], saved by silu
    b += e * a * t  # silu(conv) output, saved by `hidden * D`
    b += (r + 2 * n) * a * t  # x_dbl; dt/B/C are views of it
    b += 2 * e * a * t  # dt + bias (softplus input) and softplus output
    b += 2 * e * n * 4 * t  # discrete_A = exp(A·dt) and discrete_B, fp32
    if low:
        b += (e + n) * 4 * t  # hidden.float() and B.float() copies
    if mambapy:
        # PScan.forward saves its output X, a clone padded to the next power of two; the
        # matmul with C copies the (b, L, E, N) states when micro > 1 (a view when 1)
        padded = 1 << (seq - 1).bit_length()
        b += micro * e * n * 4 * (padded + (seq if micro > 1 else 0))
    else:
        # the recurrence keeps every step's state: fp32 states saved by the next step's mul,
        # and (16-bit) their casts saved by the matmul with C; plus the zero initial state
        states = (seq - 1) * 4 + (seq + 1) * a if low else (seq + 1) * 4
        b += micro * e * n * states
    b += e * 4 * t  # y + u·D in fp32, saved by the gating mul
    b += e * a * t  # silu(z), saved by the gating mul
    # out_proj's input is a transposed (b, L, E) tensor: reshaping it for the matmul copies
    # it; with micro-batch > 1 x_proj's input is copied the same way
    b += e * a * t * (2 if micro > 1 else 1)
    return b


def _torch_layer_mamba2(m: ModelSpec, micro: int, seq: int, a: int) -> int:
    """transformers Mamba2Mixer.forward with ``mamba2_chunk_scan`` (chunked SSD)."""
    d, e, n, k = m.d_model, m.expand * m.d_model, m.d_state, m.d_conv
    g, cs = m.ngroups, m.chunk_size
    h = e // m.headdim
    t = micro * seq
    chunks = math.ceil(seq / cs)
    tp = micro * chunks * cs  # padded to whole chunks
    conv_dim = e + 2 * g * n
    low = a == 2
    b = _torch_norm(d, a) * t
    b += (2 * e + 2 * g * n + h) * a * t  # zxbcdt = in_proj(x)
    b += conv_dim * a * micro * (seq + k - 1)  # conv1d output before slicing, saved by silu
    b += 2 * h * a * t + h * 4 * t  # dt + bias, softplus(dt), dt[..., None].float()
    if low:
        b += h * 4 * t  # dt.float()
    # hidden.float(): a copy in 16-bit; in fp32 a view of the silu(conv) output (conv_dim)
    b += (e * 4 if low else conv_dim * 4) * t
    # chunked SSD, all fp32: per padded token, three (l × s) per-head matrices
    # (exp(segsum), C·Bᵀ, their product), five B/C-sized operands of the einsums, four
    # E-sized ones (padded x for D, x·dt, and two einsum operand copies) and two A_cumsum
    # rows; per chunk, the chunk states (twice: before and after the inter-chunk pass)
    b += tp * (3 * cs * h + 5 * h * n + 4 * e + 2 * h) * 4
    b += micro * (2 * chunks + 1) * e * n * 4
    # gated RMSNorm in fp32: silu(gate), gated product, normalised output (+ the gate's
    # fp32 copy in 16-bit), the padded scan output, rstd; then out_proj's input
    b += (3 + (1 if low else 0)) * e * 4 * t + tp * e * 4 + 4 * t
    b += e * a * t
    return b


def _torch_head(m: ModelSpec, micro: int, seq: int, a: int) -> int:
    """Embedding indices, final norm (fp32 in, fp32 out with residual_in_fp32), lm-head input
    and the shifted labels."""
    d, t = m.d_model, micro * seq
    return t * (8 + 4 * d + 4 + 4 * d + a * d) + micro * (seq + 1) * 8


def _mamba_ssm_head(m: ModelSpec, micro: int, seq: int, a: int) -> int:
    """Embedding indices, the final fused add+norm (fp32 residual, rstd) and lm-head input,
    and int64 labels."""
    d, t = m.d_model, micro * seq
    return t * (8 + 4 * d + 4 + a * d + 8)


def activations(
    m: ModelSpec,
    *,
    micro_batch: int,
    seq_len: int,
    precision: str = "bf16",
    backend: str = "mamba_ssm",
    checkpointing: bool = False,
    mambapy: bool = False,
) -> Activations:
    """Activation, logits and loss memory for one micro-batch of ``micro_batch`` sequences.

    ``mambapy`` selects mambapy's parallel scan on the transformers Mamba-1 path (what
    ``ds_wizard.train`` switches on when the package is installed).
    """
    if micro_batch < 1 or seq_len < 1:
        raise ValueError("micro-batch and sequence length must be >= 1")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    a = act_bytes(precision)
    t = micro_batch * seq_len
    vocab = padded_vocab(m.vocab_size, m.pad_vocab_size_multiple)
    if backend == "mamba_ssm":
        per_layer = _mamba_ssm_layer(m, micro_batch, seq_len, a)
        head = _mamba_ssm_head(m, micro_batch, seq_len, a)
        e = m.expand * m.d_model
        working = t * (MAMBA_SSM_BWD_E_COPIES * e * a + RESIDUAL_GRAD_COPIES * 4 * m.d_model)
        logits_kept = a
        block_input = (a + 4) * m.d_model  # hidden_states and the fp32 residual
        first_input = a * m.d_model  # the embedding output; no residual yet
    else:
        per_layer = (_torch_layer_mamba1(m, micro_batch, seq_len, a, mambapy)
                     if m.arch == "mamba1" else _torch_layer_mamba2(m, micro_batch, seq_len, a))
        head = _torch_head(m, micro_batch, seq_len, a)
        working = int(per_layer * TORCH_BWD_LAYER_FRACTION)
        logits_kept = 4  # the model returns lm_head(...).float()
        block_input = 4 * m.d_model  # residual_in_fp32: the stream between blocks is fp32
        first_input = a * m.d_model  # the embedding output
    # checkpointed: each block keeps only its input; backward re-runs one block at a time
    kept = t * (first_input + block_input * (m.n_layer - 1))
    layers = (kept + per_layer) if checkpointing else per_layer * m.n_layer
    logits_saved = LOGSOFTMAX_BYTES * vocab * t
    logits_peak = (logits_kept + LOGSOFTMAX_BYTES + LOSS_GRAD_BUFFERS * 4) * vocab * t
    cast_saved = cast_peak = 0
    if precision == "autocast":
        block = AUTOCAST_COPY_BYTES * matmul_weights_per_layer(m)
        lm_head = AUTOCAST_COPY_BYTES * vocab * m.d_model
        cast_saved = lm_head + (0 if checkpointing else block * m.n_layer)
        cast_peak = cast_saved + (block if checkpointing else 0)
    return Activations(per_layer, layers, checkpointing, head, logits_saved, logits_peak,
                       working, cast_saved, cast_peak)


# --------------------------------------------------------------------------------------
# The whole estimate
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """What the estimate was computed for; every field is resolved (no ``auto``)."""

    world_size: int
    micro_batch: int
    seq_len: int
    zero_stage: int
    precision: str
    offload_optimizer: bool
    offload_param: bool
    backend: str
    activation_checkpointing: bool
    gpus_per_node: int


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak bytes on one GPU. ``total`` is the sum of the parts."""

    settings: Settings
    params: int
    grads: int
    optimizer: int
    activations: int
    logits: int
    overhead: int
    cpu_per_node: int = 0
    detail: dict[str, int] = field(default_factory=dict)

    @property
    def model_states(self) -> int:
        return self.params + self.grads + self.optimizer

    @property
    def total(self) -> int:
        return self.model_states + self.activations + self.logits + self.overhead

    def fits(self, gpu_bytes: int, headroom: float = DEFAULT_HEADROOM) -> bool:
        return self.total <= gpu_bytes * headroom

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in
               ("params", "grads", "optimizer", "activations", "logits", "overhead", "total")}
        out["cpu_per_node"] = self.cpu_per_node
        out["settings"] = asdict(self.settings)
        out["detail"] = dict(self.detail)
        return out


def estimate(
    spec: PresetSpec,
    *,
    world_size: int,
    micro_batch: int | None = None,
    zero_stage: int | None = None,
    precision: str | None = None,
    offload_optimizer: bool | None = None,
    offload_param: bool | None = None,
    backend: str = "mamba_ssm",
    activation_checkpointing: bool | None = None,
    seq_len: int | None = None,
    gpus_per_node: int | None = None,
    bf16_supported: bool | None = None,
    mambapy: bool = False,
) -> MemoryEstimate:
    """Peak memory on one GPU; unset settings come from the preset."""
    ds = spec.deepspeed
    stage = ds.zero_stage if zero_stage is None else zero_stage
    off_opt = (ds.offload_optimizer != "none") if offload_optimizer is None else offload_optimizer
    off_par = (ds.offload_param != "none") if offload_param is None else offload_param
    prec = preset_precision(spec, precision, bf16_supported)
    micro = micro_batch if micro_batch is not None \
        else spec.batch.for_world_size(world_size).micro_batch
    seq = spec.train.seq_len if seq_len is None else seq_len
    ckpt = spec.train.activation_checkpointing if activation_checkpointing is None \
        else activation_checkpointing
    per_node = gpus_per_node or world_size
    settings = Settings(world_size, micro, seq, stage, prec, off_opt, off_par, backend, ckpt,
                        per_node)

    pb = breakdown(spec.model)
    states = model_states(
        pb.total, pb.largest_layer, zero_stage=stage, precision=prec,
        offload_optimizer=off_opt, offload_param=off_par, world_size=world_size,
        gpus_per_node=per_node,
    )
    acts = activations(spec.model, micro_batch=micro, seq_len=seq, precision=prec,
                       backend=backend, checkpointing=ckpt, mambapy=mambapy)
    activ = acts.layers + acts.head + acts.working + acts.autocast_peak
    buckets = comm_buckets(stage, prec, ds.overlap_comm, ds.contiguous_gradients)
    before_frag = states.gpu_total + activ + acts.logits_peak + buckets
    frag = int(before_frag * FRAGMENTATION_FRACTION)
    overhead = CUDA_CONTEXT_BYTES + buckets + frag
    detail = {
        "activations_per_layer": acts.per_layer,
        "activations_layers": acts.layers,
        "activations_head": acts.head,
        "backward_working": acts.working,
        "autocast_weight_copies": acts.autocast_peak,
        "logits_saved": acts.logits_saved,
        "cuda_context": CUDA_CONTEXT_BYTES,
        "comm_buckets": buckets,
        "fragmentation": frag,
    }
    return MemoryEstimate(settings, states.params, states.grads, states.optimizer, activ,
                          acts.logits_peak, overhead, states.cpu_per_node, detail)


def comm_buckets(stage: int, precision: str, overlap_comm: bool, contiguous: bool) -> int:
    """DeepSpeed's gradient reduce (and ZeRO-3 prefetch) buffers on each GPU."""
    low = 2 if precision in ("bf16", "fp16") else 4
    if stage in (1, 2):
        if not contiguous:
            return 0
        elem = 4 if stage == 1 else low
        return DS_REDUCE_BUCKET_ELEMS * elem * (2 if overlap_comm else 1)
    if stage == 3:
        return DS_REDUCE_BUCKET_ELEMS * low + DS_PREFETCH_BUCKET_ELEMS * low
    return 0


# --------------------------------------------------------------------------------------
# Searches
# --------------------------------------------------------------------------------------
MAX_MICRO = 1024


def largest_micro_batch(
    spec: PresetSpec, gpu_bytes: int, headroom: float = DEFAULT_HEADROOM,
    *, limit: int = MAX_MICRO, **settings: Any,
) -> int:
    """The largest micro-batch (1..limit) whose estimate fits; 0 when even 1 does not.

    Memory grows with the micro-batch, so a binary search is exact.
    """
    def ok(micro: int) -> bool:
        return estimate(spec, micro_batch=micro, **settings).fits(gpu_bytes, headroom)

    if not ok(1):
        return 0
    lo, hi = 1, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


@dataclass(frozen=True)
class Strategy:
    zero_stage: int
    offload_optimizer: bool = False
    offload_param: bool = False

    @property
    def label(self) -> str:
        parts = [f"ZeRO-{self.zero_stage}"]
        if self.offload_optimizer:
            parts.append("optimizer offload")
        if self.offload_param:
            parts.append("param offload")
        return " + ".join(parts)


# cheapest first: a higher stage adds communication, offload adds PCIe traffic and CPU RAM
STRATEGIES: tuple[Strategy, ...] = (
    Strategy(0), Strategy(1), Strategy(2), Strategy(3),
    Strategy(2, offload_optimizer=True), Strategy(3, offload_optimizer=True),
    Strategy(3, offload_optimizer=True, offload_param=True),
)


def strategies_from(min_stage: int) -> Iterable[Strategy]:
    return (s for s in STRATEGIES if s.zero_stage >= min_stage)


__all__ = [
    "BACKENDS", "DEFAULT_HEADROOM", "STRATEGIES", "Activations", "MemoryEstimate",
    "ModelStates", "Settings", "Strategy", "activations", "comm_buckets", "estimate",
    "largest_micro_batch", "model_states",
]
