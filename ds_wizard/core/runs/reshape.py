"""Resuming a run on another world size (issue 21): the pure decisions.

A run's life is a list of *segments*: stretches of steps trained on one layout (nodes,
ranks, batch triple). ``run.json`` keeps them under ``segments`` (the top-level
``world_size``, ``nodes`` and batch keys are always those of the current segment, which is
what each rank reads); a run that never changed layout has none written, and its one
segment is read off the top-level keys.

When a resume changes the world size, four things are decided here before anything starts:

- whether DeepSpeed's universal checkpoint (``ds_to_universal``) can carry the checkpoint
  over, or is not needed (:func:`conversion_for`);
- the new split of the *same* global batch, by the rules of ``fix --keep global``
  (:func:`resolve_split`), memory-checked on GPUs; a global batch that does not divide is
  refused with the nearest valid ones;
- the segment to record (:func:`with_segment`);
- where the data continues: the global sample position (``core.runs.data``) is the sum
  of every segment's steps times its global batch (:func:`samples_consumed`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.batch import batchmath

if TYPE_CHECKING:
    from ds_wizard.core.plan.fit import GpuMemory
    from ds_wizard.core.presets.schema import PresetSpec

UNIVERSAL_SUFFIX = "_universal"
SEGMENTS_KEY = "segments"
# DeepSpeed releases that changed what ds_to_universal can do (docs/checkpoints.md)
ZERO3_UNIVERSAL = (0, 14, 5)
ZERO3_EXPANSION = (0, 18, 0)


class ReshapeRefused(DsWizardError):
    """The run cannot continue on the world size asked for; nothing was started."""


# -- segments ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """Steps ``from_step``… trained on one layout."""

    index: int  # 1-based
    from_step: int
    world_size: int
    nodes: int
    micro_batch: int
    grad_accum: int
    global_batch: int
    resumed_from: str | None = None  # the checkpoint tag it continued from
    universal: str | None = None  # the universal tag its ranks load first, if converted
    started: str = ""

    @property
    def formula(self) -> str:
        return f"{self.global_batch} = {self.micro_batch} × {self.grad_accum} × " \
               f"{self.world_size}"

    @property
    def layout(self) -> str:
        ranks = f"{self.world_size} rank{'s' if self.world_size != 1 else ''}"
        return ranks if self.nodes == 1 else f"{self.nodes} nodes, {ranks}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Segment:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def segments_of(run_json: Mapping[str, Any]) -> list[Segment]:
    """The run's segments, oldest first; one read off the top-level keys when none are
    recorded (a run that never changed layout, or one from before segments)."""
    raw = run_json.get(SEGMENTS_KEY)
    if isinstance(raw, list) and raw:
        try:
            return [Segment.from_dict(s) for s in raw if isinstance(s, Mapping)]
        except TypeError:
            pass  # a hand-edited list: fall back to what the top level says
    return [Segment(1, 1, int(run_json.get("world_size", 0) or 0),
                    int(run_json.get("nodes", 1) or 1),
                    int(run_json.get("micro_batch", 0) or 0),
                    int(run_json.get("grad_accum", 0) or 0),
                    int(run_json.get("global_batch", 0) or 0),
                    started=str(run_json.get("created", "")))]


def with_segment(run_json: Mapping[str, Any], seg: Segment) -> dict[str, Any]:
    """``run.json`` with ``seg`` as its current segment.

    Segments that began after ``seg`` resumes are dropped (their steps are trained again,
    as metrics.jsonl is cut back); a segment beginning at the same step is replaced.
    """
    kept = [s for s in segments_of(run_json) if s.from_step < seg.from_step]
    seg = Segment(**{**seg.to_dict(), "index": len(kept) + 1})
    out = dict(run_json)
    out.update(world_size=seg.world_size, nodes=seg.nodes, micro_batch=seg.micro_batch,
               grad_accum=seg.grad_accum, global_batch=seg.global_batch)
    out[SEGMENTS_KEY] = [s.to_dict() for s in [*kept, seg]]
    return out


@dataclass(frozen=True)
class SegmentSpan:
    segment: Segment
    first: int
    last: int | None  # None: nothing trained in it yet

    def to_dict(self) -> dict[str, Any]:
        return {**self.segment.to_dict(), "first_step": self.first, "last_step": self.last}

    def line(self) -> str:
        steps = (f"steps {self.first}–{self.last}" if self.last is not None
                 and self.last >= self.first else f"from step {self.first}")
        return f"{steps} on {self.segment.layout} ({self.segment.formula})"


def segment_spans(segments: list[Segment], last_step: int | None) -> list[SegmentSpan]:
    """Each segment with the steps it trained (up to ``last_step``, the run's newest)."""
    out = []
    for i, seg in enumerate(segments):
        end = segments[i + 1].from_step - 1 if i + 1 < len(segments) else last_step
        out.append(SegmentSpan(seg, seg.from_step, end))
    return out


def samples_consumed(segments: list[Segment], step: int) -> int:
    """Global samples consumed after ``step`` steps: each step of a segment takes that
    segment's global batch, whatever its world size."""
    total = 0
    for i, seg in enumerate(segments):
        end = segments[i + 1].from_step - 1 if i + 1 < len(segments) else step
        end = min(end, step)
        if end >= seg.from_step:
            total += (end - seg.from_step + 1) * seg.global_batch
    return total


# -- can DeepSpeed carry this checkpoint over? -------------------------------------------------


@dataclass(frozen=True)
class Conversion:
    """How a checkpoint moves to another world size."""

    universal: bool  # convert with ds_to_universal and load with load_universal
    reason: str


def _version(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    nums = re.findall(r"\d+", text.split("+")[0])[:3]
    return tuple(int(n) for n in nums) if nums else None


def _device(zero: Mapping[str, Any], key: str) -> str | None:
    block = zero.get(key)
    return block.get("device") if isinstance(block, Mapping) else None


def describe_stage(cfg: Mapping[str, Any]) -> str:
    zero = cfg.get("zero_optimization")
    zero = zero if isinstance(zero, Mapping) else {}
    stage = zero.get("stage", 0)
    offloads = [f"{what} offload to {dev}" for what, key in
                (("optimizer", "offload_optimizer"), ("parameter", "offload_param"))
                if (dev := _device(zero, key)) not in (None, "none")]
    return f"ZeRO-{stage}" + (f" with {' and '.join(offloads)}" if offloads else "")


def conversion_for(cfg: Mapping[str, Any], old_world: int, new_world: int,
                   ds_version: str | None) -> Conversion:
    """Whether DeepSpeed can move this run's checkpoints from ``old_world`` to
    ``new_world`` ranks, and how; ReshapeRefused naming what it cannot do.

    - ZeRO-0 in fp32 or fp16 keeps whole model and optimizer copies in
      ``mp_rank_00_model_states.pt``: it loads on any number of ranks as it is (and
      ds_to_universal has no optimizer shards to read in it);
    - ZeRO-0 in bf16 (DeepSpeed's BF16_Optimizer shards the fp32 state), ZeRO-1 and 2,
      with or without CPU offload: ds_to_universal;
    - ZeRO-3: ds_to_universal from DeepSpeed 0.14.5, growing the world size from 0.18.0;
    - NVMe offload: refused; DeepSpeed's load_checkpoint copies each rank's swap files
      back instead of loading ZeRO state, so a universal checkpoint is never read.
    """
    zero = cfg.get("zero_optimization")
    zero = zero if isinstance(zero, Mapping) else {}
    stage = zero.get("stage", 0)
    stage = stage if isinstance(stage, int) and 0 <= stage <= 3 else 0
    what = describe_stage(cfg)
    if "nvme" in (_device(zero, "offload_optimizer"), _device(zero, "offload_param")):
        raise ReshapeRefused(
            f"{what}: DeepSpeed's universal checkpoint cannot carry NVMe-offloaded state to "
            f"{new_world} rank(s) (load_checkpoint restores each rank's own swap files)",
            f"resume on {old_world} rank(s)")
    bf16 = isinstance(cfg.get("bf16"), Mapping) and cfg["bf16"].get("enabled") is True
    if stage == 0 and not bf16:
        return Conversion(False, f"{what} keeps whole model and optimizer copies: the "
                                 "checkpoint loads on any number of ranks as it is")
    version = _version(ds_version)
    if stage == 3 and version is not None:
        if version < ZERO3_UNIVERSAL:
            raise ReshapeRefused(
                f"{what}: DeepSpeed {ds_version} cannot convert ZeRO-3 checkpoints to "
                "universal ones (ds_to_universal supports ZeRO-3 from 0.14.5)",
                f"pip install 'deepspeed>=0.18', or resume on {old_world} rank(s)")
        if new_world > old_world and version < ZERO3_EXPANSION:
            raise ReshapeRefused(
                f"{what}: DeepSpeed {ds_version} cannot load a ZeRO-3 universal checkpoint "
                f"on more ranks than wrote it ({old_world} → {new_world}; fixed in 0.18.0)",
                f"pip install 'deepspeed>=0.18', or resume on {old_world} rank(s) or fewer")
    return Conversion(True, f"{what}: DeepSpeed's universal checkpoint (ds_to_universal "
                            "--inject_missing_state, then load_universal)")


# -- the new split of the global batch --------------------------------------------------------


@dataclass(frozen=True)
class Split:
    micro_batch: int
    grad_accum: int
    world_size: int

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.grad_accum * self.world_size

    @property
    def formula(self) -> str:
        return f"{self.global_batch} = {self.micro_batch} × {self.grad_accum} × " \
               f"{self.world_size}"


def nearest_global_batches(global_batch: int, world: int) -> list[int]:
    """The valid global batches nearest ``global_batch`` on ``world`` ranks (below, above)."""
    sol = batchmath.solve(world, global_batch, max_micro=max(global_batch, world),
                          max_gas=max(global_batch, world))
    if sol.exact:
        return [global_batch]
    return [x for x in (sol.lower, sol.upper) if x is not None]


def resolve_split(cfg: Mapping[str, Any], new_world: int, *, global_batch: int | None = None,
                  spec: PresetSpec | None = None, gpu: GpuMemory | None = None,
                  headroom: float = 0.9, backend: str = "mamba_ssm") -> Split:
    """Micro-batch and accumulation for the global batch on ``new_world`` ranks.

    The rules are ``fix --keep global``'s: the largest micro-batch not above the current
    one that divides the per-rank batch. With ``gpu`` (and ``spec``), a split whose memory
    estimate does not fit is passed over for the next smaller micro-batch.
    """
    from ds_wizard.core.check.checker import fix_config

    current = cfg.get("train_batch_size")
    target = global_batch if global_batch is not None else current
    if not isinstance(target, int) or target < 1:
        raise ReshapeRefused(f"the run's config has no usable train_batch_size ({target!r})")
    if target % new_world:
        near = " or ".join(str(n) for n in nearest_global_batches(target, new_world))
        flag = "another --global-batch" if global_batch is not None else "--global-batch N"
        raise ReshapeRefused(
            f"global batch {target} cannot be split over {new_world} data-parallel rank(s); "
            f"nearest valid global batches: {near}",
            f"pass {flag} to train with one (the LR schedule stays as it was), or choose "
            "another number of ranks")
    fixed, _, _ = fix_config({**cfg, "train_batch_size": target}, new_world,
                                 keep="global")
    first = (int(fixed["train_micro_batch_size_per_gpu"]),
             int(fixed["gradient_accumulation_steps"]))
    pairs = batchmath.solve(new_world, target, max_micro=target, max_gas=target).pairs
    order = [first] + [p for p in pairs if p[0] < first[0]]  # largest micro first
    if gpu is None or spec is None:
        return Split(first[0], first[1], new_world)
    from ds_wizard.core.plan.fit import config_estimate, memory_warning

    problem = None
    for micro, gas in order:
        trial = {**cfg, "train_batch_size": target, "train_micro_batch_size_per_gpu": micro,
                 "gradient_accumulation_steps": gas}
        est = config_estimate(trial, spec, new_world, micro, backend=backend)
        warning = memory_warning(est, spec, gpu, headroom)
        if warning is None:
            return Split(micro, gas, new_world)
        problem = problem or warning
    raise ReshapeRefused(f"no split of global batch {target} over {new_world} rank(s) fits: "
                         f"{problem}", "resume on more GPUs, or pass a smaller --global-batch")


def with_split(cfg: Mapping[str, Any], split: Split) -> dict[str, Any]:
    """The config with the new triple (every other key as it was)."""
    out = dict(cfg)
    out["train_batch_size"] = split.global_batch
    out["train_micro_batch_size_per_gpu"] = split.micro_batch
    out["gradient_accumulation_steps"] = split.grad_accum
    return out


# -- universal checkpoints on disk ------------------------------------------------------------


def universal_tag(tag: str) -> str:
    return f"{tag}{UNIVERSAL_SUFFIX}"


def universal_problems(tag_dir: Path) -> list[str]:
    """What a ds_to_universal output lacks for DeepSpeed's load_universal; [] when whole.

    The loader reads ``zero/optimizer_state.pt`` and, per parameter, ``zero/<name>/fp32.pt``
    with its optimizer moments, plus the model-states file(s) copied from the source tag.
    """
    problems = []
    zero = tag_dir / "zero"
    if not (zero / "optimizer_state.pt").is_file():
        problems.append("zero/optimizer_state.pt is missing")
    params = [p for p in zero.iterdir() if p.is_dir()] if zero.is_dir() else []
    if not params:
        problems.append("zero/ holds no parameters")
    for p in sorted(params):
        if not (p / "fp32.pt").is_file():
            problems.append(f"zero/{p.name}/fp32.pt is missing")
    if not list(tag_dir.glob("*model_states.pt")):
        problems.append("no *model_states.pt file was copied from the source tag")
    return problems


# -- the wizard's offer ------------------------------------------------------------------------


@dataclass(frozen=True)
class ResumeOffer:
    """What the Runs screen offers besides resuming as launched: this machine's ranks,
    with the new split of the same global batch, or why it cannot be split."""

    run_world: int
    here: int
    device: str  # "GPU" | "CPU rank"
    split: Split | None
    refusal: str | None

    @property
    def label(self) -> str:
        noun = self.device + ("s" if self.here != 1 else "")
        return f"on this machine ({self.here} {noun})"

    @property
    def detail(self) -> str:
        if self.split is None:
            return f"refused: {self.refusal}"
        return f"global batch {self.split.formula} (accumulation re-solved)"


def resume_offer(cfg: Mapping[str, Any], run_world: int, here: int,
                 device: str) -> ResumeOffer | None:
    """None when this machine has as many ranks as the run, else the offer."""
    if here < 1 or here == run_world:
        return None
    try:
        return ResumeOffer(run_world, here, device, resolve_split(cfg, here), None)
    except ReshapeRefused as exc:
        return ResumeOffer(run_world, here, device, None, exc.message)
