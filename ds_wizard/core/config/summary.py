"""The human summary of a DeepSpeed config, in the source document's words.

Pure functions returning lines, so ``--auto``, ``train --dry-run`` and the TUI print the
same text::

    ✅ Config validated: 128 = 4 × 8 × 4

    📊 DeepSpeed training configuration:
    Model type: mamba
    Estimated parameters: 6.95B (6,945,935,360)
    GPUs: 4
    ...
"""

from __future__ import annotations

from typing import Any

from ds_wizard.core.batch import batchmath
from ds_wizard.core.plan.params import human_count


def model_type(arch: str) -> str:
    """The name the summary shows: ``mamba`` for Mamba-1, ``mamba2`` for Mamba-2."""
    return "mamba" if arch == "mamba1" else arch


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def summary_lines(
    config: dict[str, Any],
    world_size: int,
    *,
    model_type: str,
    params: int,
    config_source: str | None = None,
    dry_run: bool = False,
    device: str = "GPU",
) -> list[str]:
    """The summary for ``config`` on ``world_size`` data-parallel ranks.

    ``config_source`` adds the "Using pre-built config: FILE" line; ``dry_run`` adds the
    closing "validation complete (dry_run mode)" line; ``device="CPU"`` labels the ranks of a
    CPU run as what they are. An invalid triplet is shown with
    DeepSpeed's own message instead of the ✅ lines.
    """
    res = batchmath.resolve(
        _int_or_none(config.get("train_batch_size")),
        _int_or_none(config.get("train_micro_batch_size_per_gpu")),
        _int_or_none(config.get("gradient_accumulation_steps")),
        world_size,
    )
    zero = config.get("zero_optimization")
    stage = zero.get("stage", 0) if isinstance(zero, dict) else 0
    lines: list[str] = []
    if config_source:
        lines.append(f"✅ Using pre-built config: {config_source}")
    if res.valid:
        lines.append(f"✅ Config validated: {res.formula}")
    else:
        lines.append(f"❌ Config invalid: {res.error}")
    lines += [
        "",
        "📊 DeepSpeed training configuration:",
        f"Model type: {model_type}",
        f"Estimated parameters: {human_count(params)} ({params:,})",
        f"{device}s: {world_size}" if device == "GPU" else f"{device} ranks: {world_size}",
        f"Batch size per {device if device == 'GPU' else 'rank'}: {_shown(res.micro_batch)}",
        f"Gradient accumulation: {_shown(res.grad_accum)}",
        f"Effective batch size: {_shown(res.train_batch_size)}",
        f"ZeRO stage: {stage}",
        "",
    ]
    if res.valid:
        lines.append(f"✅ Batch size validated: {res.formula}")
    else:
        lines.append(f"❌ Batch size invalid: {res.formula or res.error}")
    if dry_run:
        lines.append("✅ Config validation complete (dry_run mode)" if res.valid
                     else "❌ Config validation failed (dry_run mode)")
    return lines


def _shown(value: int | None) -> str:
    return "?" if value is None else str(value)
