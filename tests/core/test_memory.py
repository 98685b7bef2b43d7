"""The per-GPU memory model: DeepSpeed's own estimators as the oracle for model states, the
byte counts for ZeRO-0/1, and the searches built on the estimate."""

from __future__ import annotations

import itertools

import pytest

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.plan.fit import DoesNotFit, GpuMemory, choose_fit, parse_size
from ds_wizard.core.plan.memory import (
    GiB,
    activations,
    estimate,
    largest_micro_batch,
    model_states,
)
from ds_wizard.core.plan.params import breakdown
from ds_wizard.core.presets.lookup import load_preset

PARAMS = (1_000_003, 129_000_000, 1_372_000_000, 6_945_935_360, 70_000_000_000)
GPUS_PER_NODE = (1, 2, 8)
NODES = (1, 2, 4)


def within(ours: float, theirs: float, tol: float = 0.01) -> bool:
    return abs(ours - theirs) <= tol * max(abs(theirs), 1)


@pytest.mark.parametrize("params", PARAMS)
def test_zero2_equals_deepspeed_estimator(params):
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    for gpn, nodes, offload in itertools.product(GPUS_PER_NODE, NODES, (False, True)):
        cpu, gpu = estimate_zero2_model_states_mem_needs(
            total_params=params, num_gpus_per_node=gpn, num_nodes=nodes,
            cpu_offload=offload, additional_buffer_factor=1.5)
        ours = model_states(params, 0, zero_stage=2, precision="bf16",
                            offload_optimizer=offload, world_size=gpn * nodes,
                            gpus_per_node=gpn)
        assert within(ours.gpu_total, gpu), (params, gpn, nodes, offload, ours, gpu)
        assert within(ours.cpu_per_node, cpu), (params, gpn, nodes, offload, ours, cpu)


@pytest.mark.parametrize("params", PARAMS)
def test_zero3_equals_deepspeed_estimator(params):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    for gpn, nodes, largest_div in itertools.product(GPUS_PER_NODE, NODES, (7, 50)):
        largest = params // largest_div
        for opt, par in ((False, False), (True, False), (True, True)):
            cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
                total_params=params, largest_layer_params=largest, num_gpus_per_node=gpn,
                num_nodes=nodes, cpu_offload=opt, cpu_offload_params=par, zero_init=True,
                additional_buffer_factor=1.5)
            ours = model_states(params, largest, zero_stage=3, precision="bf16",
                                offload_optimizer=opt, offload_param=par,
                                world_size=gpn * nodes, gpus_per_node=gpn)
            case = (params, gpn, nodes, largest, opt, par)
            assert within(ours.gpu_total, gpu), (case, ours, gpu)
            assert within(ours.cpu_per_node, cpu), (case, ours, cpu)


def test_zero0_and_zero1_follow_the_byte_counts():
    p, g = 1_000_000, 8
    # 2 (16-bit params) + 2 (16-bit grads) + 4 (fp32 grads) + 4 (fp32 master) + 8 (Adam)
    assert model_states(p, 0, zero_stage=0, precision="bf16").gpu_total == 20 * p
    # ZeRO-1 shards fp32 grads, master and Adam; 16-bit params and grads stay whole
    z1 = model_states(p, 0, zero_stage=1, precision="bf16", world_size=g)
    assert (z1.params, z1.grads, z1.optimizer) == (2 * p, 2 * p + 4 * p // g, 12 * p // g)
    # fp32 without ZeRO: params, grads, Adam; with ZeRO the optimizer keeps a 4 B clone
    assert model_states(p, 0, zero_stage=0, precision="fp32").gpu_total == 16 * p
    z2 = model_states(p, 0, zero_stage=2, precision="autocast", world_size=g)
    assert z2.gpu_total == 4 * p + (4 + 4 + 8) * p // g
    # each stage shards more, so per-GPU model states never grow with the stage
    totals = [model_states(p, p // 10, zero_stage=s, world_size=g).gpu_total for s in range(4)]
    assert totals == sorted(totals, reverse=True)


def test_model_states_reject_impossible_combinations():
    # offload is a user's choice (plan --zero, --zero-stage): a one-line error, not a crash
    with pytest.raises(DsWizardError, match="stage 1, 2 or 3"):
        model_states(10, 1, zero_stage=0, offload_optimizer=True)
    with pytest.raises(DsWizardError, match="stage 3"):
        model_states(10, 1, zero_stage=2, offload_param=True)
    with pytest.raises(ValueError, match="precision"):
        model_states(10, 1, zero_stage=2, precision="int8")


def test_mamba_ssm_activations_are_about_18d_bytes_per_token_per_layer():
    spec = load_preset("7b_mamba").spec.model
    acts = activations(spec, micro_batch=1, seq_len=2048, precision="bf16", backend="mamba_ssm")
    per_token = acts.per_layer / 2048
    assert 18 * spec.d_model <= per_token <= 18.5 * spec.d_model


def test_checkpointing_saves_memory_and_grows_with_the_micro_batch():
    spec = load_preset("mamba_1.4b").spec
    on = estimate(spec, world_size=1, micro_batch=4, activation_checkpointing=True)
    off = estimate(spec, world_size=1, micro_batch=4, activation_checkpointing=False)
    # a block's input (bf16 hidden + fp32 residual, 6·d) instead of its ~18·d saved tensors
    assert on.detail["activations_layers"] < off.detail["activations_layers"] / 2.5
    assert on.total < off.total
    sizes = [estimate(spec, world_size=1, micro_batch=m).total for m in (1, 2, 4, 8)]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4


def test_estimate_total_is_the_sum_of_its_parts():
    est = estimate(load_preset("7b_mamba").spec, world_size=8, micro_batch=4)
    parts = est.params + est.grads + est.optimizer + est.activations + est.logits + est.overhead
    assert est.total == parts
    assert est.to_dict()["total"] == parts
    pb = breakdown(load_preset("7b_mamba").spec.model)
    assert est.params == 2 * pb.total  # ZeRO-2 keeps whole 16-bit params


def test_largest_micro_batch_is_the_boundary():
    spec = load_preset("mamba_1.4b").spec
    gpu = 40 * GiB
    m = largest_micro_batch(spec, gpu, 0.9, world_size=2, zero_stage=2)
    assert m >= 1
    assert estimate(spec, world_size=2, micro_batch=m, zero_stage=2).fits(gpu, 0.9)
    assert not estimate(spec, world_size=2, micro_batch=m + 1, zero_stage=2).fits(gpu, 0.9)
    assert largest_micro_batch(load_preset("7b_mamba").spec, 8 * GiB, world_size=1,
                               zero_stage=2) == 0


def test_cheapest_fit_prefers_low_stages_then_offload():
    spec = load_preset("7b_mamba").spec
    gpu = GpuMemory(80 * GiB, "test")
    small = choose_fit(load_preset("mamba_130m").spec, 1, gpu, micro_batch=1, from_stage=0)
    assert small.strategy.zero_stage == 0
    big = choose_fit(spec, 1, gpu, micro_batch=1, from_stage=0)
    assert big.strategy.offload_optimizer
    with pytest.raises(DoesNotFit):
        choose_fit(spec, 1, GpuMemory(4 * GiB, "test"), micro_batch=1, from_stage=0)


def test_choose_fit_reaches_the_target_batch_and_fits():
    spec = load_preset("7b_mamba").spec
    gpu = GpuMemory(80 * GiB, "test")
    fit = choose_fit(spec, 8, gpu)
    assert fit.choice.global_batch == 128
    assert fit.estimate.fits(gpu.bytes, 0.9)
    assert fit.choice.micro_batch <= fit.max_micro


@pytest.mark.parametrize(("text", "expected"), [
    ("80GiB", 80 * 2**30), ("80GB", 80 * 10**9), ("24G", 24 * 2**30), ("24Gi", 24 * 2**30),
    ("81920MiB", 80 * 2**30), ("1.5TiB", int(1.5 * 2**40)), (" 40 gib ", 40 * 2**30),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("80", "no unit"), ("eighty GiB", "cannot read"), ("80XB", "cannot read"),
    ("0GiB", "positive"), ("-4GiB", "cannot read"), ("80B", "few bytes"),
    ("9999999TiB", "implausibly large"), ("", "cannot read"),
])
def test_parse_size_rejects_bad_sizes(text, message):
    with pytest.raises(DsWizardError, match=message):
        parse_size(text)
