"""Issue 21, the pure decisions of a resume on another world size (core.runs.reshape) and
the launch side's conversion bookkeeping with a recording converter (fast lane)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ds_wizard.core.plan.fit import GpuMemory
from ds_wizard.core.presets.lookup import load_preset
from ds_wizard.core.runs import reshape as R
from ds_wizard.core.runs import rundir
from ds_wizard.launch import reshape as L

CFG = {"train_batch_size": 12, "train_micro_batch_size_per_gpu": 3,
       "gradient_accumulation_steps": 2, "zero_optimization": {"stage": 2}}


def test_the_same_global_batch_is_split_anew_by_the_keep_global_rules() -> None:
    one = R.resolve_split(CFG, 1)
    three = R.resolve_split(CFG, 3)
    assert (one.micro_batch, one.grad_accum, one.global_batch) == (3, 4, 12)
    # the largest micro-batch not above the current 3 that divides 12 / 3 = 4 per rank
    assert (three.micro_batch, three.grad_accum, three.global_batch) == (2, 2, 12)
    assert R.with_split(CFG, three)["gradient_accumulation_steps"] == 2


def test_an_indivisible_global_batch_is_refused_with_the_nearest_valid_ones() -> None:
    with pytest.raises(R.ReshapeRefused) as err:
        R.resolve_split({**CFG, "train_batch_size": 16, "train_micro_batch_size_per_gpu": 4},
                        3)
    line = err.value.one_line()
    assert "\n" not in line
    assert "global batch 16 cannot be split over 3 data-parallel rank(s); nearest valid " \
           "global batches: 15 or 18" in line and "--global-batch" in line
    # asked for explicitly, another global batch is taken
    split = R.resolve_split({**CFG, "train_batch_size": 16}, 3, global_batch=18)
    assert split.global_batch == 18 and split.formula == "18 = 3 × 2 × 3"


def test_the_split_is_memory_checked_on_gpus() -> None:
    spec = load_preset("mamba_1.4b").spec
    cfg = {"train_batch_size": 64, "train_micro_batch_size_per_gpu": 8,
           "gradient_accumulation_steps": 1, "bf16": {"enabled": True},
           "zero_optimization": {"stage": 2}}
    roomy = R.resolve_split(cfg, 4, spec=spec, gpu=GpuMemory(80 << 30, "test"))
    tight = R.resolve_split(cfg, 4, spec=spec, gpu=GpuMemory(24 << 30, "test"))
    assert roomy.global_batch == tight.global_batch == 64
    assert tight.micro_batch < roomy.micro_batch
    with pytest.raises(R.ReshapeRefused, match="no split of global batch 64 over 4"):
        R.resolve_split(cfg, 4, spec=spec, gpu=GpuMemory(4 << 30, "test"))


@pytest.mark.parametrize(("zero", "extra", "universal"), [
    ({"stage": 0}, {}, False),
    ({"stage": 0}, {"bf16": {"enabled": True}}, True),
    ({"stage": 1}, {}, True),
    ({"stage": 2, "offload_optimizer": {"device": "cpu"}}, {}, True),
    ({"stage": 3}, {}, True),
    ({"stage": 3, "offload_optimizer": {"device": "cpu"}, "offload_param": {"device": "cpu"}},
     {"bf16": {"enabled": True}}, True),
])
def test_every_planned_stage_has_a_way_over(zero: dict, extra: dict, universal: bool) -> None:
    conv = R.conversion_for({"zero_optimization": zero, **extra}, 2, 3, "0.19.8")
    assert conv.universal is universal


def test_what_deepspeed_cannot_convert_is_named_before_anything_starts() -> None:
    nvme = {"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "nvme"}}}
    with pytest.raises(R.ReshapeRefused, match="ZeRO-3 with optimizer offload to nvme: "
                       "DeepSpeed's universal checkpoint cannot carry NVMe"):
        R.conversion_for(nvme, 2, 1, "0.19.8")
    z3 = {"zero_optimization": {"stage": 3}}
    with pytest.raises(R.ReshapeRefused, match=r"DeepSpeed 0\.14\.0 cannot convert ZeRO-3"):
        R.conversion_for(z3, 2, 1, "0.14.0")
    with pytest.raises(R.ReshapeRefused, match=r"on more ranks than wrote it \(2 → 4"):
        R.conversion_for(z3, 2, 4, "0.17.1")
    assert R.conversion_for(z3, 4, 2, "0.17.1").universal  # shrinking worked before 0.18


def test_segments_record_the_lineage_and_the_global_sample_position() -> None:
    run = {"created": "t0", "world_size": 2, "nodes": 1, "micro_batch": 3, "grad_accum": 2,
           "global_batch": 12}
    first = R.segments_of(run)
    assert [(s.index, s.from_step, s.world_size) for s in first] == [(1, 1, 2)]
    run = R.with_segment(run, R.Segment(0, 21, 3, 1, 2, 2, 12, "global_step20",
                                        "global_step20_universal"))
    run = R.with_segment(run, R.Segment(0, 26, 1, 1, 3, 4, 12, "global_step25"))
    segs = R.segments_of(run)
    assert [(s.index, s.from_step, s.world_size) for s in segs] == [(1, 1, 2), (2, 21, 3),
                                                                    (3, 26, 1)]
    assert run["world_size"] == 1 and run["grad_accum"] == 4  # what the ranks read
    spans = R.segment_spans(segs, 30)
    assert [(s.first, s.last) for s in spans] == [(1, 20), (21, 25), (26, 30)]
    assert spans[1].line() == "steps 21–25 on 3 ranks (12 = 2 × 2 × 3)"
    assert R.samples_consumed(segs, 30) == 360 and R.samples_consumed(segs, 22) == 264
    # resuming again from step 20 drops the segments whose steps are trained again
    again = R.segments_of(R.with_segment(run, R.Segment(0, 21, 1, 1, 3, 4, 12)))
    assert [(s.index, s.from_step) for s in again] == [(1, 1), (2, 21)]
    json.dumps(run)  # run.json stays plain JSON


def _tag(ckpts: Path, step: int) -> rundir.CheckpointInfo:
    tag = rundir.checkpoint_tag(step)
    (ckpts / tag).mkdir(parents=True)
    (ckpts / tag / "mp_rank_00_model_states.pt").write_bytes(b"m" * step)
    (ckpts / tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"o")
    rundir.write_marker(ckpts, tag, step, {"world_size": 2})
    return next(c for c in rundir.scan_checkpoints(ckpts) if c.step == step)


class Converter:
    """Stands in for ds_to_universal: writes its output layout (or a broken one) and
    records each call."""

    def __init__(self, broken: set[str] = frozenset()) -> None:
        self.broken, self.calls = broken, []

    def __call__(self, command: list[str], say) -> None:
        src = Path(command[command.index("--input_folder") + 1])
        out = Path(command[command.index("--output_folder") + 1])
        self.calls.append(src.name)
        assert "--inject_missing_state" in command
        (out / "zero" / "embedding.weight").mkdir(parents=True)
        (out / "zero" / "embedding.weight" / "fp32.pt").write_bytes(b"w")
        if src.name not in self.broken:
            (out / "zero" / "optimizer_state.pt").write_bytes(b"s")
        (out / "mp_rank_00_model_states.pt").write_bytes((src / "mp_rank_00_model_states.pt")
                                                         .read_bytes())


def test_a_conversion_failing_verification_falls_back_to_the_newest_intact_tag(
        tmp_path: Path) -> None:
    older, newer = _tag(tmp_path, 10), _tag(tmp_path, 20)
    before = (newer.path / "mp_rank_00_model_states.pt").read_bytes()
    said: list[str] = []
    conv = Converter(broken={"global_step20"})
    done = L.universal_for(tmp_path, [newer, older], said.append, runner=conv)
    assert conv.calls == ["global_step20", "global_step10"]
    assert done.tag == "global_step10_universal" and done.source == older
    assert any("the universal checkpoint converted from global_step20 failed verification "
               "(zero/optimizer_state.pt is missing): falling back to global_step10" in s
               for s in said)
    assert not (tmp_path / "global_step20_universal").exists()
    # the source tag is untouched and still verifies; the output carries a marker
    assert (newer.path / "mp_rank_00_model_states.pt").read_bytes() == before
    assert rundir.check_checkpoint(newer) == []
    marker = rundir.read_marker(tmp_path / done.tag, 10)
    assert marker["universal_of"] == "global_step10" and "files" in marker


def test_a_damaged_earlier_conversion_is_redone_from_its_intact_tag(tmp_path: Path) -> None:
    newer = _tag(tmp_path, 20)
    conv = Converter()
    first = L.universal_for(tmp_path, [newer], lambda s: None, runner=conv)
    again = L.universal_for(tmp_path, [newer], lambda s: None, runner=conv)
    assert again.seconds is None and conv.calls == ["global_step20"]  # verified, reused
    (tmp_path / first.tag / "zero" / "optimizer_state.pt").write_bytes(b"planted")
    said: list[str] = []
    redone = L.universal_for(tmp_path, [newer], said.append, runner=conv)
    assert conv.calls == ["global_step20", "global_step20"] and redone.seconds is not None
    assert any("converted checkpoint global_step20_universal failed verification" in s
               and "converting again from the newest intact tag, global_step20" in s
               for s in said)


def test_no_convertible_tag_is_one_error(tmp_path: Path) -> None:
    newer = _tag(tmp_path, 20)
    with pytest.raises(rundir.RunError, match=r"could be converted.*no older intact tag"):
        L.universal_for(tmp_path, [newer], lambda s: None,
                        runner=Converter(broken={"global_step20"}))
