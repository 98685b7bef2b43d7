"""Fit-aware choices on top of :mod:`ds_wizard.core.plan.memory`: the micro-batch, ZeRO stage and
offload that fit a GPU, with the reasons a summary prints, and advice when nothing fits.

Used by ``--auto`` (through :func:`ds_wizard.core.config.auto.auto_configure`), ``plan``, ``check``
and the TUI, so every surface gives the same answer.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.batch import batchmath
from ds_wizard.core.batch.choice import BatchChoice
from ds_wizard.core.plan.memory import (
    DEFAULT_HEADROOM,
    GiB,
    MemoryEstimate,
    Strategy,
    estimate,
    largest_micro_batch,
    strategies_from,
)
from ds_wizard.core.presets.schema import PresetSpec

if TYPE_CHECKING:
    from ds_wizard.core.plan.gpus import GpuInventory

# ASCII digits, and few of them: "٣GiB" or a 400-digit size is a typo, not a GPU
_SIZE = re.compile(r"^\s*(\d{1,12}(?:\.\d{1,12})?)\s*([kmgt]?)(i?)(b?)\s*$",
                   re.IGNORECASE | re.ASCII)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
MAX_GPU_BYTES = 1 << 50  # 1 PiB: anything larger is a typo


class DoesNotFit(DsWizardError):
    """Nothing the wizard can choose fits the GPU; ``advice`` says what would."""

    def __init__(self, message: str, advice: list[str]) -> None:
        hint = ("would fit with: " + "; ".join(advice)) if advice else (
            "no setting the wizard knows fits; use GPUs with more memory")
        super().__init__(message, hint + "; nothing was written")
        self.advice = advice


def parse_size(text: str) -> int:
    """``80GiB``, ``80GB``, ``24G``, ``81920MiB``, ``1.5TiB`` → bytes.

    ``GiB``/``Gi`` and a bare ``G`` are binary (2³⁰, as nvidia-smi and Slurm mean it);
    ``GB`` is decimal (10⁹, as on the box). A number without a unit is refused, since
    bytes and GiB are both plausible readings.
    """
    m = _SIZE.match(str(text))
    if not m:
        raise DsWizardError(f"cannot read {str(text)[:40]!r} as a memory size",
                            "write it like 80GiB, 80GB or 24G")
    number, prefix, binary, b = m.groups()
    if not prefix:
        if b:
            raise DsWizardError(f"{text!r} is a few bytes; GPU memory is gigabytes",
                                "write it like 80GiB")
        raise DsWizardError(f"memory size {text!r} has no unit", "write it like 80GiB or 24G")
    power = _POWERS[prefix.lower()]
    decimal = bool(b) and not binary
    value = int(float(number) * (1000 if decimal else 1024) ** power)
    if value <= 0:
        raise DsWizardError(f"memory size {text!r} must be positive", "write it like 80GiB")
    if value > MAX_GPU_BYTES:
        raise DsWizardError(f"memory size {text!r} is implausibly large for one GPU",
                            "give the memory of one GPU, e.g. 80GiB")
    return value


def gib(nbytes: float) -> str:
    return f"{nbytes / GiB:.1f} GiB"


def check_headroom(headroom: float) -> float:
    if not 0 < headroom <= 1:
        raise DsWizardError(f"headroom {headroom} must be in (0, 1]",
                            "e.g. --headroom 0.9 plans to 90% of GPU memory")
    return headroom


@dataclass(frozen=True)
class GpuMemory:
    """The per-GPU memory to plan for, and where the number came from."""

    bytes: int
    source: str  # "--gpu-memory 80GiB" or "smallest detected GPU (NVIDIA H100 80GB HBM3)"

    def usable(self, headroom: float) -> int:
        return int(self.bytes * headroom)


def gpu_memory_from(given: str | None, report: GpuInventory | None = None) -> GpuMemory | None:
    """``--gpu-memory`` if given, else the smallest GPU in ``report``, else None."""
    if given is not None:
        return GpuMemory(parse_size(given), f"--gpu-memory {given}")
    if report is not None and report.gpus:
        smallest = min(report.gpus, key=lambda g: g.memory_total)
        return GpuMemory(smallest.memory_total, f"smallest detected GPU ({smallest.name})")
    return None


@dataclass(frozen=True)
class FitResult:
    """A strategy and micro-batch that fit, the batch built on them, and why."""

    strategy: Strategy
    max_micro: int  # the largest micro-batch that fits with this strategy
    choice: BatchChoice
    estimate: MemoryEstimate
    reasons: tuple[str, ...]


def _start(spec: PresetSpec, zero_stage: int | None,
           from_stage: int | None) -> tuple[list[Strategy], str]:
    ds = spec.deepspeed
    if from_stage is not None:
        return list(strategies_from(from_stage)), f"the lowest stage from ZeRO-{from_stage}"
    if zero_stage is not None:
        return [s for s in strategies_from(zero_stage) if s.zero_stage == zero_stage], \
            f"ZeRO-{zero_stage} given"
    wants_opt = ds.offload_optimizer != "none"
    wants_par = ds.offload_param != "none"
    strategies = [
        s for s in strategies_from(ds.zero_stage)
        if (s.offload_optimizer or not wants_opt) and (s.offload_param or not wants_par)
    ]
    return strategies, f"the preset's ZeRO-{ds.zero_stage}"


def _settings(strategy: Strategy, **settings: Any) -> dict[str, Any]:
    return dict(settings, zero_stage=strategy.zero_stage,
                offload_optimizer=strategy.offload_optimizer,
                offload_param=strategy.offload_param)


def choose_fit(
    spec: PresetSpec,
    world_size: int,
    gpu: GpuMemory,
    *,
    headroom: float = DEFAULT_HEADROOM,
    micro_batch: int | None = None,
    grad_accum: int | None = None,
    global_batch: int | None = None,
    zero_stage: int | None = None,
    from_stage: int | None = None,
    **settings: Any,
) -> FitResult:
    """The cheapest strategy (preset's stage, raised, then offload) with the largest micro-batch
    that fits, and the accumulation that reaches the target global batch.

    ``zero_stage`` pins the stage (offload may still be added); ``from_stage`` ignores the
    preset and tries every strategy from that stage up (``plan``'s "cheapest that fits").
    ``settings`` go to :func:`memory.estimate` (precision, backend, gpus_per_node, ...).
    Raises :class:`DoesNotFit` with advice when even one sample does not fit.
    """
    check_headroom(headroom)
    usable = gpu.usable(headroom)
    strategies, start_why = _start(spec, zero_stage, from_stage)
    need = micro_batch or 1
    reasons = [f"GPU memory {gib(gpu.bytes)} per GPU ({gpu.source}); planning to "
               f"{headroom:.0%} = {gib(usable)}"]
    skipped: list[str] = []
    for strat in strategies:
        kw = _settings(strat, world_size=world_size, **settings)
        at_need = estimate(spec, micro_batch=need, **kw)
        if not at_need.fits(gpu.bytes, headroom):
            skipped.append(f"{strat.label} needs {gib(at_need.total)} per GPU "
                           f"(model states {gib(at_need.model_states)})")
            continue
        max_micro = largest_micro_batch(spec, gpu.bytes, headroom, **kw)
        break
    else:
        raise DoesNotFit(
            _no_fit_message(world_size, gpu, headroom, need, skipped),
            fit_advice(spec, world_size, gpu, headroom, strategies, settings),
        )
    if skipped:
        reasons.append(f"too big at micro-batch {need}: " + "; ".join(skipped))
    reasons.append(_strategy_reason(strat, start_why, skipped, spec, world_size, gpu,
                                    headroom, settings, at_need))
    choice = _batch_for(spec, world_size, max_micro, micro_batch, grad_accum, global_batch)
    est = estimate(spec, micro_batch=choice.micro_batch, **kw)
    reasons += list(choice.reasons)
    reasons.append(f"estimated peak {gib(est.total)} per GPU of {gib(usable)} usable "
                   f"({gib(usable - est.total)} to spare)")
    return FitResult(strat, max_micro, choice, est, tuple(reasons))


def _strategy_reason(strat: Strategy, start_why: str, skipped: list[str], spec: PresetSpec,
                     ws: int, gpu: GpuMemory, headroom: float, settings: dict[str, Any],
                     est: MemoryEstimate) -> str:
    if not skipped:
        return f"{strat.label}: {start_why}; model states {gib(est.model_states)} per GPU fit"
    if not (strat.offload_optimizer or strat.offload_param):
        return f"raised to {strat.label}: the lowest stage at which it fits"
    more = more_gpus_without_offload(spec, ws, gpu, headroom, settings)
    alt = f"; without offload it would fit on {more}+ GPUs with ZeRO-3" if more else ""
    return (f"the model does not fit on {ws} GPU(s) of {gib(gpu.bytes)} without offload, so "
            f"{strat.label} to CPU is used: it needs about {gib(est.cpu_per_node)} of CPU RAM "
            f"per node and is slower{alt}")


def _batch_for(spec: PresetSpec, ws: int, max_micro: int, micro: int | None,
               gas: int | None, target: int | None) -> BatchChoice:
    plan = spec.batch.for_world_size(ws)
    goal = target or plan.global_batch
    if micro is not None:
        if gas is None:
            if target is not None and target % (micro * ws) == 0:
                gas = target // (micro * ws)
            else:
                gas, why = batchmath.pick_grad_accum(ws, micro, goal)
                return BatchChoice(micro, gas, ws, (f"micro-batch {micro} given (fits; up to "
                                                    f"{max_micro} would)",
                                                    f"gradient accumulation {gas}: {why}"))
        return BatchChoice(micro, gas, ws, (f"micro-batch {micro} given (fits; up to "
                                            f"{max_micro} would), accumulation {gas}",))
    if gas is not None:
        m = max(1, min(max_micro, goal // (gas * ws) or 1))
        return BatchChoice(m, gas, ws, (f"micro-batch {m}: the largest that fits with "
                                        f"accumulation {gas} given",))
    # no micro-batch larger than the target needs per rank: it would overshoot the recipe
    cap = max(1, min(max_micro, goal // ws))
    reasons = [f"micro-batch up to {max_micro} fits in memory"]
    if cap < max_micro:
        reasons.append(f"capped at {cap}: target global batch {goal} / {ws} GPU(s)")
    exact = [m for m in range(cap, 0, -1) if goal % (m * ws) == 0]
    micro_pick = exact[0] if exact and exact[0] * 2 >= cap else cap
    if micro_pick != cap:
        reasons.append(f"micro-batch {micro_pick}: the largest at or below {cap} that reaches "
                       f"the target global batch {goal} exactly")
    else:
        reasons.append(f"micro-batch {micro_pick}: the largest that fits")
    g, why = batchmath.pick_grad_accum(ws, micro_pick, goal)
    reasons.append(f"gradient accumulation {g}: {why}")
    return BatchChoice(micro_pick, g, ws, tuple(reasons))


# --------------------------------------------------------------------------------------
# Advice when it does not fit
# --------------------------------------------------------------------------------------
MAX_SUGGESTED_GPUS = 4096


def more_gpus_without_offload(spec: PresetSpec, ws: int, gpu: GpuMemory, headroom: float,
                              settings: dict[str, Any]) -> int | None:
    """The smallest GPU count above ``ws`` at which ZeRO-3 without offload fits one sample per
    GPU; None when it already fits on ``ws`` or never does."""
    kw = {k: v for k, v in settings.items() if k != "gpus_per_node"}
    for n in range(ws, MAX_SUGGESTED_GPUS + 1):
        est = estimate(spec, world_size=n, micro_batch=1, zero_stage=3,
                       offload_optimizer=False, offload_param=False, **kw)
        if est.fits(gpu.bytes, headroom):
            return n if n > ws else None
        if est.model_states < 0.01 * gpu.bytes:
            return None  # only activations are left, and more GPUs do not shrink them
    return None


def _shorter_sequence(spec: PresetSpec, strategies: list[Strategy], ws: int, gpu: GpuMemory,
                      headroom: float, settings: dict[str, Any]) -> int | None:
    seq = spec.train.seq_len // 2
    while seq >= 64:
        for strat in strategies:
            kw = _settings(strat, world_size=ws, **settings)
            if estimate(spec, micro_batch=1, seq_len=seq, **kw).fits(gpu.bytes, headroom):
                return seq
        seq //= 2
    return None


def fit_advice(spec: PresetSpec, ws: int, gpu: GpuMemory, headroom: float,
               strategies: list[Strategy], settings: dict[str, Any]) -> list[str]:
    """What would make one sample fit: more GPUs, ZeRO-3/offload, checkpointing, shorter
    sequences."""
    out = []
    more = more_gpus_without_offload(spec, ws, gpu, headroom, settings)
    if more:
        out.append(f"{more}+ GPUs with ZeRO-3")
    tried = {s.label for s in strategies}
    for strat in strategies_from(0):
        if strat.label in tried:
            continue
        kw = _settings(strat, world_size=ws, **settings)
        if estimate(spec, micro_batch=1, **kw).fits(gpu.bytes, headroom):
            how = "" if strat.offload_optimizer else f" (--zero-stage {strat.zero_stage})"
            out.append(f"{strat.label}{how}")
            break
    if not settings.get("activation_checkpointing", spec.train.activation_checkpointing):
        for strat in strategies:
            kw = _settings(strat, world_size=ws, **dict(settings, activation_checkpointing=True))
            if estimate(spec, micro_batch=1, **kw).fits(gpu.bytes, headroom):
                out.append("activation checkpointing (--set train.activation_checkpointing=true)")
                break
    seq = _shorter_sequence(spec, strategies, ws, gpu, headroom, settings)
    if seq:
        out.append(f"a shorter sequence (--set train.seq_len={seq})")
    return out


def _no_fit_message(ws: int, gpu: GpuMemory, headroom: float, need: int,
                    skipped: list[str]) -> str:
    best = skipped[-1] if skipped else "every setting"
    return (f"the model does not fit on {ws} GPU(s) of {gib(gpu.bytes)} ({gpu.source}; "
            f"planning to {headroom:.0%} = {gib(gpu.usable(headroom))}): even {best} at "
            f"micro-batch {need}")


# --------------------------------------------------------------------------------------
# ``check``: does an existing DeepSpeed config fit?
# --------------------------------------------------------------------------------------
def _offloaded(zero: dict[str, Any], key: str) -> bool:
    block = zero.get(key)
    return isinstance(block, dict) and block.get("device") in ("cpu", "nvme")


def config_estimate(cfg: dict[str, Any], spec: PresetSpec, world_size: int,
                    micro_batch: int, backend: str = "mamba_ssm") -> MemoryEstimate:
    """The memory estimate for a DeepSpeed config dict and the preset's model."""
    zero = cfg.get("zero_optimization")
    zero = zero if isinstance(zero, dict) else {}
    stage = zero.get("stage", 0)
    stage = stage if isinstance(stage, int) and not isinstance(stage, bool) \
        and 0 <= stage <= 3 else 0

    def on(key: str) -> bool:
        block = cfg.get(key)
        return isinstance(block, dict) and block.get("enabled") is True

    precision = ("bf16" if on("bf16") or on("bfloat16") else "fp16" if on("fp16")
                 else "autocast" if on("torch_autocast") else "fp32")
    return estimate(spec, world_size=world_size, micro_batch=micro_batch, zero_stage=stage,
                    precision=precision, backend=backend,
                    offload_optimizer=stage > 0 and _offloaded(zero, "offload_optimizer"),
                    offload_param=stage == 3 and _offloaded(zero, "offload_param"))


def memory_warning(est: MemoryEstimate, spec: PresetSpec, gpu: GpuMemory,
                   headroom: float = DEFAULT_HEADROOM) -> str | None:
    """One warning line when ``est`` does not fit ``gpu``; None when it fits."""
    if est.fits(gpu.bytes, headroom):
        return None
    s = est.settings
    # the settings are estimate()'s own keyword arguments: the same estimate at other sizes
    kw = {k: v for k, v in asdict(s).items() if k != "micro_batch"}
    largest = largest_micro_batch(spec, gpu.bytes, headroom, **kw)
    fix = (f"micro-batch {largest} would fit" if largest else
           "even micro-batch 1 does not fit at this ZeRO stage; see `ds-wizard plan`")
    return (f"estimated peak memory {gib(est.total)} per GPU at micro-batch {s.micro_batch} "
            f"(ZeRO-{s.zero_stage}, {s.precision}) exceeds {gib(gpu.usable(headroom))} "
            f"({headroom:.0%} of {gib(gpu.bytes)}, {gpu.source}): {fix}")
