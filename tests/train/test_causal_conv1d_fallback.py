"""The pure-PyTorch causal-conv1d stand-in against an explicit causal sum (float64, CPU)."""

from __future__ import annotations

import sys

import pytest
import torch

from ds_wizard.train import causal_conv1d_fallback as cc

B, D, S, W = 2, 3, 11, 4


def explicit(x, weight, bias=None, seq_idx=None, initial=None, silu=False):
    """out[b, c, t] = bias[c] + sum_k weight[c, k] * x[b, c, t - (W-1) + k], by loops."""
    b_, d_, s_ = x.shape
    w_ = weight.shape[-1]
    out = torch.zeros_like(x)
    for b in range(b_):
        for c in range(d_):
            for t in range(s_):
                acc = bias[c].item() if bias is not None else 0.0
                for k in range(w_):
                    src = t - (w_ - 1) + k
                    if src >= 0:
                        if seq_idx is not None and seq_idx[b, src] != seq_idx[b, t]:
                            continue
                        acc += weight[c, k].item() * x[b, c, src].item()
                    elif initial is not None:
                        acc += weight[c, k].item() * initial[b, c, w_ - 1 + src].item()
                out[b, c, t] = acc
    return torch.nn.functional.silu(out) if silu else out


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, D, S, generator=g, dtype=torch.float64)
    weight = torch.randn(D, W, generator=g, dtype=torch.float64)
    bias = torch.randn(D, generator=g, dtype=torch.float64)
    return x, weight, bias


@pytest.mark.parametrize("silu", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_forward_is_the_causal_sum(data, silu, with_bias):
    x, weight, bias = data
    bias = bias if with_bias else None
    got = cc.causal_conv1d_fwd_function(x, weight, bias, None, None, None, silu)
    torch.testing.assert_close(got, explicit(x, weight, bias, silu=silu), rtol=0, atol=1e-12)
    fn = cc.causal_conv1d_fn(x, weight, bias, activation="silu" if silu else None)
    torch.testing.assert_close(fn, got, rtol=0, atol=0)


def test_packed_sequences_do_not_mix(data):
    x, weight, bias = data
    seq_idx = torch.tensor([[0] * 5 + [1] * 6, [0] * 2 + [1] * 4 + [2] * 5], dtype=torch.int32)
    got = cc.causal_conv1d_fwd_function(x, weight, bias, seq_idx, None, None, True)
    torch.testing.assert_close(got, explicit(x, weight, bias, seq_idx, silu=True),
                               rtol=0, atol=1e-12)


def test_initial_and_final_states(data):
    x, weight, bias = data
    initial = torch.randn(B, D, W - 1, dtype=torch.float64)
    final = torch.empty(B, D, W - 1, dtype=torch.float64)
    got = cc.causal_conv1d_fwd_function(x, weight, bias, None, initial, final, False)
    torch.testing.assert_close(got, explicit(x, weight, bias, initial=initial),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(final, x[..., -(W - 1):], rtol=0, atol=0)


@pytest.mark.parametrize("seq", [False, True])
def test_backward_matches_autograd_of_the_explicit_sum(data, seq):
    x, weight, bias = data
    seq_idx = torch.tensor([[0] * 6 + [1] * 5] * B, dtype=torch.int32) if seq else None
    dout = torch.randn(B, D, S, dtype=torch.float64)
    xs, ws, bs = (t.clone().requires_grad_(True) for t in (x, weight, bias))
    explicit_out = cc._conv(xs, ws, bs, seq_idx, None, True)  # same graph as the reference:
    torch.testing.assert_close(explicit_out.detach(),
                               explicit(x, weight, bias, seq_idx, silu=True), rtol=0, atol=1e-12)
    ref = torch.autograd.grad(explicit_out, (xs, ws, bs), dout)
    dx_buffer = torch.empty_like(x)
    dx, dw, db, dinit = cc.causal_conv1d_bwd_function(x, weight, bias, dout, seq_idx, None,
                                                      None, dx_buffer, False, True)
    assert dx is dx_buffer and dinit is None
    for got, want in zip((dx, dw, db), ref, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # and against finite differences of the explicit loop sum, for one weight
    eps = 1e-6
    bumped = weight.clone()
    bumped[1, 2] += eps
    fd = ((explicit(x, bumped, bias, seq_idx, silu=True)
           - explicit(x, weight, bias, seq_idx, silu=True)) * dout).sum() / eps
    assert abs(fd.item() - dw[1, 2].item()) < 1e-5


def test_update_step_equals_the_next_output_of_the_sequence(data):
    x, weight, bias = data
    full = cc.causal_conv1d_fwd_function(x, weight, bias, None, None, None, True)
    state = torch.zeros(B, D, W - 1, dtype=torch.float64)
    steps = [cc.causal_conv1d_update(x[..., t], state, weight, bias, "silu") for t in range(S)]
    torch.testing.assert_close(torch.stack(steps, -1), full, rtol=0, atol=1e-12)


def test_install_registers_only_without_the_real_package(monkeypatch):
    monkeypatch.delitem(sys.modules, "causal_conv1d", raising=False)
    monkeypatch.delitem(sys.modules, "causal_conv1d.cpp_functions", raising=False)
    monkeypatch.setattr(cc.importlib.util, "find_spec", lambda name: None)
    assert cc.install() is True
    from causal_conv1d.cpp_functions import causal_conv1d_fwd_function

    assert causal_conv1d_fwd_function is cc.causal_conv1d_fwd_function
    assert cc.install() is True  # idempotent
    monkeypatch.delitem(sys.modules, "causal_conv1d")
    monkeypatch.delitem(sys.modules, "causal_conv1d.cpp_functions")
    monkeypatch.setattr(cc.importlib.util, "find_spec", lambda name: object())
    assert cc.install() is False and "causal_conv1d" not in sys.modules
