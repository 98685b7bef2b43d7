"""MFU's two halves (the peak table and FLOPs per token) and autocast's weight copies."""

from __future__ import annotations

import dataclasses

import pytest

from ds_wizard.core.plan.flops import PEAKS, compute_precision, find_peak, peak_flops
from ds_wizard.core.plan.params import (
    breakdown,
    flops_per_token,
    matmul_weights_per_layer,
    scan_flops_per_token,
)
from ds_wizard.core.presets.lookup import load_preset


@pytest.mark.parametrize(("name", "tflops"), [
    ("NVIDIA A100-SXM4-80GB", 312), ("NVIDIA A100 80GB PCIe", 312),
    ("NVIDIA H100 80GB HBM3", 989.5), ("NVIDIA H100 PCIe", 756.5), ("NVIDIA H100 NVL", 835.5),
    ("NVIDIA H200", 989.5), ("NVIDIA H200 NVL", 835.5), ("NVIDIA GH200 480GB", 989.5),
    ("NVIDIA H800", 989.5), ("NVIDIA B200", 2250), ("NVIDIA L40S", 362.05),
    ("NVIDIA L40", 181.05), ("NVIDIA L4", 121), ("NVIDIA A10", 125),
    ("NVIDIA GeForce RTX 4090", 165.2), ("NVIDIA RTX 6000 Ada Generation", 364.2),
    ("NVIDIA RTX A6000", 154.8),
])
def test_dense_bf16_peaks_by_device_name(name: str, tflops: float) -> None:
    assert peak_flops(name, "bf16") == pytest.approx(tflops * 1e12)


def test_names_that_only_look_alike_are_not_matched() -> None:
    assert find_peak("NVIDIA A10G") is None  # not the A10, and not an A100
    assert find_peak("NVIDIA Quadro P5000") is None
    assert peak_flops("Tesla V100-SXM2-32GB", "bf16") is None  # no bf16 tensor cores
    assert peak_flops("Tesla V100-SXM2-32GB", "fp16") == pytest.approx(125e12)
    assert peak_flops("NVIDIA H100 PCIe", "fp32") is None  # no MFU claimed for fp32


def test_every_table_entry_names_its_source() -> None:
    assert all(p.source and (p.bf16 is None or p.bf16 <= p.fp16 * 1.01) for p in PEAKS)


@pytest.mark.parametrize(("cfg", "precision"), [
    ({"bf16": {"enabled": True}}, "bf16"), ({"fp16": {"enabled": True}}, "fp16"),
    ({"torch_autocast": {"enabled": True, "dtype": "bfloat16"}}, "bf16"), ({}, "fp32"),
])
def test_compute_precision_of_a_config(cfg: dict, precision: str) -> None:
    assert compute_precision(cfg) == precision


def test_mamba2_scan_is_a_real_share_of_the_flops() -> None:
    shares = {}
    for name in ("mamba2_130m", "mamba2_1.3b", "mamba2_2.7b", "mamba_130m"):
        m = load_preset(name).spec.model
        shares[name] = 3 * scan_flops_per_token(m) / flops_per_token(m)
    assert 0.10 < shares["mamba2_130m"] < 0.15
    assert 0.05 < shares["mamba2_2.7b"] < shares["mamba2_1.3b"] < 0.09
    assert shares["mamba_130m"] < 0.03  # Mamba-1's scan is small
    m = load_preset("mamba2_130m").spec.model
    # SSD's intra-chunk work grows with the chunk length
    longer = dataclasses.replace(m, chunk_size=m.chunk_size * 2)
    assert scan_flops_per_token(longer) > scan_flops_per_token(m)


def test_an_untied_embedding_is_a_lookup_not_a_matmul() -> None:
    m = load_preset("mamba_130m").spec.model
    untied = dataclasses.replace(m, tie_embeddings=False)
    # untying adds V·d parameters but no matmul work: the LM head multiplies as before
    # and the separate input embedding is a lookup (6·P would count 6·V·d more)
    assert breakdown(untied).total - breakdown(m).total == breakdown(m).embedding
    assert flops_per_token(untied) == flops_per_token(m)


@pytest.mark.parametrize("arch", ["mamba1", "mamba2"])
def test_autocast_saves_the_16_bit_weight_copies_the_memory_model_counts(arch: str) -> None:
    """Under torch.autocast every matmul weight is cast to bf16 and the cast is saved for
    backward: the memory model's autocast term counts exactly those copies."""
    import torch

    from ds_wizard.core.plan.memory import activations
    from ds_wizard.core.presets.schema import ModelSpec
    from ds_wizard.train.model import build_model

    extra = {"d_state": 16, "headdim": 16, "chunk_size": 16} if arch == "mamba2" else {}
    spec = ModelSpec(arch=arch, d_model=64, n_layer=2, vocab_size=256,
                     pad_vocab_size_multiple=8, **extra)
    torch.manual_seed(0)
    model = build_model(spec, "transformers").train()
    # saved as the weight or its transpose (mm of a linear saves w.t())
    matmul_shapes = {s for m in model.modules()
                     if isinstance(m, (torch.nn.Linear, torch.nn.Embedding))
                     for s in (tuple(m.weight.shape), tuple(m.weight.shape)[::-1])}
    copies: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.dtype == torch.bfloat16 and tuple(t.shape) in matmul_shapes:
            copies[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    # 24 tokens: no activation shares a weight's shape
    ids = torch.randint(0, 256, (1, 24), generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16), \
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(input_ids=ids, labels=ids)
    measured = sum(copies.values())
    del out
    est = activations(spec, micro_batch=1, seq_len=24, precision="autocast",
                      backend="transformers")
    assert est.autocast_saved == measured
    assert est.autocast_saved == 2 * (spec.n_layer * matmul_weights_per_layer(spec)
                                      + breakdown(spec).embedding)
    ckpt = activations(spec, micro_batch=1, seq_len=24, precision="autocast",
                       backend="transformers", checkpointing=True)
    assert ckpt.autocast_saved == 2 * breakdown(spec).embedding  # the LM head's only
    assert activations(spec, micro_batch=1, seq_len=24, precision="bf16",
                       backend="transformers").autocast_saved == 0
