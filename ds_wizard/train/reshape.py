"""Inside each rank: load a universal checkpoint after a change of world size (issue 21).

The launch side (``ds_wizard.launch.reshape``) converted the checkpoint and recorded the
new segment in ``run.json`` with the universal tag to load. The ranks load it, with
``"checkpoint": {"load_universal": true}`` added to the config they hand DeepSpeed, until
the segment has saved a checkpoint of its own; from then on a resume loads that one as
usual. Like every tag, the universal one is verified against its completion marker (each
rank hashes its share) before DeepSpeed ``torch.load``-s anything in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ds_wizard.core.runs import rundir
from ds_wizard.core.runs.reshape import Segment, segments_of


@dataclass(frozen=True)
class Pending:
    """The universal tag this launch loads, and the segment it starts."""

    tag: str
    step: int
    segment: Segment


def current_segment(paths: rundir.RunPaths) -> Segment:
    return segments_of(rundir.load_run_json(paths.root))[-1]


def pending_universal(paths: rundir.RunPaths, world: int) -> Pending | None:
    """The universal tag to load: the current segment's, unless it has saved its own tag."""
    seg = current_segment(paths)
    if not seg.universal or seg.world_size != world:
        return None
    saved_since = [c for c in rundir.scan_checkpoints(paths.checkpoints)
                   if c.complete and c.step >= seg.from_step]
    if saved_since:
        return None
    return Pending(seg.universal, seg.from_step - 1, seg)


def with_load_universal(cfg: dict[str, Any]) -> dict[str, Any]:
    """The config with DeepSpeed's universal loading switched on (this launch only: the
    file on disk stays as it is, so a later resume from a normal tag loads normally)."""
    block = cfg.get("checkpoint")
    block = dict(block) if isinstance(block, dict) else {}
    block["load_universal"] = True
    return {**cfg, "checkpoint": block}


def verify_universal(pending: Pending, paths: rundir.RunPaths, rank: int, world: int,
                     tdist: Any) -> str:
    """Every rank hashes its share of the universal tag; RunError naming what is wrong."""
    path = paths.checkpoints / pending.tag
    marker = rundir.read_marker(path, pending.step)
    files = marker.get("files") if marker else None
    problems: list[str] = []
    if not isinstance(files, dict):
        problems = [f"{pending.tag} has no valid completion marker"]
    else:
        info = rundir.CheckpointInfo(pending.tag, pending.step, path, True, files)
        problems = rundir.check_checkpoint(info, share=(rank, world))
    gathered: list[Any] = [None] * world
    tdist.all_gather_object(gathered, problems)
    found = sorted({p for part in gathered for p in part})
    if found:
        raise rundir.RunError(
            f"universal checkpoint {pending.tag} failed verification: {'; '.join(found[:3])}",
            "run `ds-wizard launch --resume` again: it converts the checkpoint anew")
    return pending.tag


def segment_fields(seg: Segment, step: int) -> dict[str, Any]:
    """What a metrics record of ``step`` carries about its segment: nothing in segment 1;
    its number later, and ``segment_start`` on the segment's first step."""
    if seg.index <= 1:
        return {}
    out: dict[str, Any] = {"segment": seg.index}
    if step == seg.from_step:
        out["segment_start"] = True
    return out
