"""core.plan.report: what `ds-wizard plan` decides, as one MemoryPlan; its JSON and its
text rows are read from the same object."""

from __future__ import annotations

import pytest

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.batch.topology import resolve_topology
from ds_wizard.core.plan.gpus import GpuInventory
from ds_wizard.core.plan.memory import GiB, estimate
from ds_wizard.core.plan.report import PARTS, memory_plan
from ds_wizard.core.presets.lookup import load_preset

SEVEN_B = load_preset("7b_mamba")


def test_the_plan_fits_and_names_the_cheapest_setting() -> None:
    plan = memory_plan(SEVEN_B, resolve_topology(num_gpus=8), gpu_memory="80GiB", micro=2)
    assert plan.estimate == estimate(SEVEN_B.spec, world_size=8, micro_batch=2)
    assert plan.fits and plan.usable == int(0.9 * 80 * GiB)
    assert plan.largest_micro_batch == 3
    assert plan.cheapest is not None and plan.cheapest.strategy.zero_stage == 1
    assert plan.verdict_lines() == [
        "Largest micro-batch that fits: 3 (ZeRO-2)",
        f"Cheapest setting that fits: ZeRO-1 fits micro-batch 2 "
        f"({plan.cheapest.estimate.total / GiB:.1f} GiB)"]


def test_json_and_rows_say_the_same() -> None:
    plan = memory_plan(SEVEN_B, resolve_topology(num_gpus=8), gpu_memory="80GiB", micro=2)
    data = plan.as_dict()
    rows = {what: (figure, note) for what, figure, note in plan.table_rows()}
    for part in (*PARTS, "total"):
        assert rows[part][0] == f"{data['estimate'][part] / GiB:.1f} GiB"
    assert rows["GPU memory"] == ("80.0 GiB", "(--gpu-memory 80GiB)")
    assert rows["usable"][1].endswith(": fits") is data["fits"] is True
    assert data["cheapest_fit"]["zero_stage"] == 1 and data["does_not_fit"] is None


def test_nothing_fits_says_why_with_advice() -> None:
    plan = memory_plan(SEVEN_B, resolve_topology(num_gpus=1), gpu_memory="24G", micro=4)
    assert not plan.fits and plan.cheapest is None and plan.largest_micro_batch == 0
    assert plan.does_not_fit is not None and "does not fit" in plan.does_not_fit
    assert plan.verdict_lines()[0] == "Largest micro-batch that fits: none (not even 1) (ZeRO-2)"
    assert plan.verdict_lines()[1] == f"Nothing fits: {plan.does_not_fit}"
    assert plan.table_rows()[-1][2].endswith("DOES NOT FIT")


def test_offload_shows_the_cpu_memory_per_node() -> None:
    plan = memory_plan(SEVEN_B, resolve_topology(num_gpus=8, num_nodes=2), gpu_memory="40GiB",
                       zero=3, offload_optimizer="cpu")
    assert plan.strategy == "ZeRO-3 + optimizer offload" and plan.nodes == 2
    assert plan.table_rows()[-1][0] == "CPU per node"
    assert "2 node(s), ZeRO-3 + optimizer offload" in plan.heading()[1]


def test_unknown_gpu_memory_is_one_error() -> None:
    with pytest.raises(DsWizardError) as caught:
        memory_plan(SEVEN_B, resolve_topology(num_gpus=1),
                    gpu_report=GpuInventory(reason="no NVIDIA driver (test)"))
    assert caught.value.one_line() == ("GPU memory unknown: no GPU detected (no NVIDIA driver "
                                       "(test)) (pass --gpu-memory, e.g. --gpu-memory 80GiB)")
