"""``tune --save-preset NAME``: a tuned batch as a reviewed ``by_world_size`` entry.

The entry is what a team already shares for a measured choice (schema.BatchSpec); the
measurement that justifies it goes above it as a TOML comment, so a reviewer sees where
the number came from. The preset is a user preset (``presets.user_dir()``): the one named
NAME when it exists (its old text kept as NAME.toml.bak), else a copy of the tuned preset.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ds_wizard.core.base.errors import PresetError

GiB = 2**30


def tuned_comment(result: Any) -> list[str]:
    """The comment lines above the entry (``result`` is a core.plan.tune.TuneResult)."""
    c = result.chosen
    cand = c.candidate
    lines = [f"measured by `ds-wizard tune` on {result.machine}: "
             f"{cand.micro_batch} x {cand.grad_accum} x {cand.world_size}, "
             f"{cand.strategy.label}",
             f"peak {(c.measured_peak or 0) / GiB:.2f} GiB ({result.peak_kind}; model "
             f"{c.predicted_peak / GiB:.2f} GiB), {c.tokens_per_s or 0:,.0f} tokens/s; "
             f"{len(result.measurements)} candidate(s) at global batch {result.global_batch}"]
    for m in result.measurements:
        if m is c:
            continue
        peak = f"{m.measured_peak / GiB:.2f} GiB" if m.measured_peak else "-"
        tps = f"{m.tokens_per_s:,.0f} tokens/s" if m.tokens_per_s else "-"
        lines.append(f"  also: micro-batch {m.candidate.micro_batch}: {m.status}, peak "
                     f"{peak}, {tps}")
    return lines


def with_comment(text: str, world_size: int, comment: Sequence[str]) -> str:
    """``text`` (tomli_w output) with ``comment`` above ``[batch.by_world_size.N]``."""
    header = f"[batch.by_world_size.{world_size}]"
    block = "".join(f"# {line}\n" for line in comment)
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.strip() == header:
            return "".join(lines[:i]) + block + "".join(lines[i:])
    return text + "\n" + block  # pragma: no cover - the entry was just written


def save_tuned_preset(name: str, base_ref: Any, sets: Sequence[str], result: Any) -> Path:
    """Write the tuned choice into user preset ``name``; returns its path."""
    from ds_wizard.core.presets.lookup import check_name, load_preset, validate_data
    from ds_wizard.core.presets.overrides import load_with_overrides
    from ds_wizard.core.presets.store import (
        _write_user_preset,
        derive_spec,
        to_toml,
        user_preset_path,
    )

    check_name(name)
    dest = user_preset_path(name)
    if dest.is_file():
        spec = load_preset(str(dest)).spec
        based = name
    else:
        base = load_with_overrides(base_ref, sets)
        spec = derive_spec(base.spec, base.name,
                           f"{base.spec.description} (batch tuned by ds-wizard tune)")
        based = base.name
    cand = result.chosen.candidate
    data = spec.to_dict()
    pinned = dict(data["batch"].get("by_world_size") or {})
    pinned[str(cand.world_size)] = {"global_batch": cand.global_batch,
                                    "micro_batch": cand.micro_batch}
    data["batch"]["by_world_size"] = pinned
    comment = tuned_comment(result)
    if data["deepspeed"]["zero_stage"] != cand.strategy.zero_stage:
        data["deepspeed"]["zero_stage"] = cand.strategy.zero_stage
        comment.append(f"ZeRO stage set to {cand.strategy.zero_stage} by the tune "
                       "(it applies to every world size)")
    new = validate_data(data, f"the tuned preset {name!r}").spec
    text = with_comment(to_toml(new, [f"preset {name!r}, based on {based}; batch tuned by "
                                      f"ds-wizard tune"]), cand.world_size, comment)
    if dest.is_file():
        try:  # an in-place edit keeps the previous text
            shutil.copy2(dest, dest.with_name(dest.name + ".bak"))
        except OSError as exc:
            raise PresetError(f"cannot back up {dest}: {exc.strerror or exc}") from exc
    return _write_user_preset(name, text, force=os.path.lexists(dest))
