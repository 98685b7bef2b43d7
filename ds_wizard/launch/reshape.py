"""Resume a run on another world size (issue 21): DeepSpeed's universal checkpoint, run for
the user.

    plan = prepare_run(LaunchRequest(resume="latest", num_gpus=1))   # calls plan_reshape

1. :func:`plan_reshape` decides, before anything is written: whether DeepSpeed can carry
   the checkpoint over (``core.runs.reshape.conversion_for``), the new split of the same
   global batch (``resolve_split``, the rules of ``fix --keep global``), memory checks,
   DeepSpeed's own parser on the new config.
2. :func:`universal_for` runs ``python -m deepspeed.checkpoint.ds_to_universal
   --input_folder CKPT/global_stepN --output_folder CKPT/global_stepN_universal
   --inject_missing_state`` as a subprocess, printing its stages, and vouches for the
   output with the same completion marker (size and SHA-256 of every file) as any tag.
   The source tag is never touched. A converted tag that fails verification is converted
   again from its (intact) source; a conversion that fails falls back to the next older
   intact tag. Each is said.
3. :func:`commit_reshape` records the new segment in ``run.json`` and the new triple in
   ``ds_config.json`` (the old one kept as ``ds_config.json.bak``).

The ranks (``ds_wizard.train.reshape``) load the universal tag with
``"checkpoint": {"load_universal": true}`` until the new segment has saved its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.base.fsio import atomic_write_text
from ds_wizard.core.runs import rundir
from ds_wizard.core.runs.reshape import (
    Conversion,
    ReshapeRefused,
    Segment,
    Split,
    conversion_for,
    resolve_split,
    segments_of,
    universal_problems,
    universal_tag,
    with_segment,
    with_split,
)

if TYPE_CHECKING:
    from ds_wizard.core.batch.topology import Topology
    from ds_wizard.core.presets.lookup import Preset
    from ds_wizard.core.runs.runspec import Accelerator, RunInfo, RunSpec
    from ds_wizard.launch.plan import LaunchRequest

Say = Callable[[str], None]
CONVERTER = "deepspeed.checkpoint.ds_to_universal"


class ConversionFailed(DsWizardError):
    """ds_to_universal exited with an error."""


def deepspeed_version() -> str | None:
    """The installed DeepSpeed's version, without importing it (3 s)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("deepspeed")
    except PackageNotFoundError:
        return None


def checkpoint_world(info: rundir.CheckpointInfo) -> int | None:
    """The number of ranks that wrote a tag, from its completion marker."""
    marker = rundir.read_marker(info.path, info.step)
    ws = marker.get("world_size") if marker else None
    return ws if isinstance(ws, int) and ws > 0 else None


# -- the conversion ---------------------------------------------------------------------------


def converter_command(source: Path, output: Path) -> list[str]:
    workers = str(max(1, min(4, os.cpu_count() or 1)))
    return [sys.executable, "-m", CONVERTER, "--input_folder", str(source),
            "--output_folder", str(output), "--inject_missing_state",
            "--num_extract_workers", workers, "--num_merge_workers", workers]


def run_converter(command: Sequence[str], say: Say) -> None:
    """Run ds_to_universal, passing on its stages (``*** 1. Extracting ZeRO fragments``…);
    ConversionFailed with its last words when it fails."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    try:
        proc = subprocess.Popen(list(command), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=env)
    except OSError as exc:
        raise ConversionFailed(f"cannot start {CONVERTER}: {exc}") from exc
    assert proc.stdout is not None
    tail: list[str] = []
    buf = b""
    for chunk in iter(lambda: proc.stdout.read1(4096), b""):  # type: ignore[union-attr]
        buf += chunk
        # tqdm redraws with \r: split on both so a bar is not one endless line
        *lines, buf = buf.replace(b"\r", b"\n").split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            tail = [*tail, line][-8:]
            if line.startswith("***"):
                say(f"   ds_to_universal: {line.strip('* ')}")
    code = proc.wait()
    if code != 0:
        said = next((ln for ln in reversed(tail) if "Error" in ln or "error" in ln),
                    tail[-1] if tail else "no output")
        raise ConversionFailed(f"{CONVERTER} exited with code {code}: {said}")


def convert_tag(ckpts: Path, info: rundir.CheckpointInfo, say: Say,
                runner: Callable[[Sequence[str], Say], None] = run_converter) -> float:
    """Convert one intact tag into ``<tag>_universal`` beside it; the seconds it took.

    Only the output directory is written (and DeepSpeed's ``latest_universal`` pointer);
    the marker goes in last, so an interrupted conversion vouches for nothing.
    """
    out = ckpts / universal_tag(info.tag)
    if out.exists():
        shutil.rmtree(out)
    say(f"🔁 converting {info.tag} to a universal checkpoint ({out.name}) with DeepSpeed's "
        "ds_to_universal")
    t0 = time.perf_counter()
    runner(converter_command(info.path, out), say)
    return time.perf_counter() - t0


def _vouch(ckpts: Path, info: rundir.CheckpointInfo, seconds: float) -> list[str]:
    """Check the output's structure, write its marker, verify it against the marker."""
    out = ckpts / universal_tag(info.tag)
    problems = universal_problems(out) if out.is_dir() else ["nothing was written"]
    if problems:
        return problems
    rundir.write_marker(ckpts, out.name, info.step,
                        {"universal_of": info.tag, "world_size": checkpoint_world(info),
                         "conversion_s": round(seconds, 2)})
    cinfo = _universal_info(ckpts, info)
    return ["its completion marker is unreadable"] if cinfo is None \
        else rundir.check_checkpoint(cinfo)


def _universal_info(ckpts: Path, source: rundir.CheckpointInfo) -> rundir.CheckpointInfo | None:
    """The universal tag converted from ``source``, when its marker says so."""
    path = ckpts / universal_tag(source.tag)
    marker = rundir.read_marker(path, source.step)
    if marker is None or marker.get("universal_of") != source.tag:
        return None
    files = marker.get("files")
    return rundir.CheckpointInfo(path.name, source.step, path, True,
                                 files if isinstance(files, dict) else None)


@dataclass(frozen=True)
class Universal:
    """A verified universal tag, the intact tag it came from, and what happened."""

    source: rundir.CheckpointInfo
    tag: str
    seconds: float | None  # None: an earlier conversion was verified and reused
    notes: tuple[str, ...]


def universal_for(ckpts: Path, candidates: Sequence[rundir.CheckpointInfo], say: Say,
                  runner: Callable[[Sequence[str], Say], None] = run_converter) -> Universal:
    """A verified universal checkpoint of the newest of ``candidates`` (intact tags,
    newest first) that converts; each fallback is said and noted."""
    notes: list[str] = []

    def note(text: str) -> None:
        notes.append(text)
        say(f"⚠️  {text}")

    for i, info in enumerate(candidates):
        older = candidates[i + 1].tag if i + 1 < len(candidates) else None
        fallback = f"falling back to {older}" if older else "no older intact tag to fall back to"
        existing = _universal_info(ckpts, info)
        if existing is not None:
            problems = rundir.check_checkpoint(existing) + universal_problems(existing.path)
            if not problems:
                return Universal(info, existing.tag, None, tuple(notes))
            note(f"converted checkpoint {existing.tag} failed verification "
                 f"({'; '.join(problems[:2])}): converting again from the newest intact "
                 f"tag, {info.tag}")
        try:
            seconds = convert_tag(ckpts, info, say, runner)
        except ConversionFailed as exc:
            note(f"converting {info.tag} failed ({exc.message}): {fallback}")
            continue
        problems = _vouch(ckpts, info, seconds)
        if problems:
            note(f"the universal checkpoint converted from {info.tag} failed verification "
                 f"({'; '.join(problems[:2])}): {fallback}")
            shutil.rmtree(ckpts / universal_tag(info.tag), ignore_errors=True)
            continue
        say(f"✅ {universal_tag(info.tag)} written and verified in {seconds:.1f} s")
        return Universal(info, universal_tag(info.tag), seconds, tuple(notes))
    raise rundir.RunError(f"no checkpoint in {ckpts} could be converted to a universal one"
                          + (f": {notes[-1]}" if notes else ""),
                          "resume on the world size that wrote it")


def intact_tags(ckpts: Path) -> list[rundir.CheckpointInfo]:
    """Complete tags whose files verify (sizes and SHA-256), newest first."""
    out = []
    for info in reversed([c for c in rundir.scan_checkpoints(ckpts) if c.complete]):
        if not rundir.check_checkpoint(info):
            out.append(info)
    return out


# -- planning a resume on another world size ---------------------------------------------------


@dataclass(frozen=True)
class ReshapePlan:
    """What a resume on another layout will do; nothing is written until committed."""

    run: RunSpec
    config: dict[str, Any]
    checkpoint: rundir.CheckpointInfo
    old_world: int
    split: Split
    conversion: Conversion
    segment: Segment
    notes: tuple[str, ...]
    batch_changed: bool


def wanted(r: LaunchRequest, info: RunInfo, ckpt: rundir.CheckpointInfo) -> bool:
    """Whether this resume changes the layout (ranks, nodes, batch) or loads a checkpoint
    written by another number of ranks (a reshaped resume that stopped before saving)."""
    ws = info.spec.world_size
    if r.num_gpus is not None and r.num_gpus != ws:
        return True
    if getattr(r, "global_batch", None) is not None \
            and r.global_batch != info.spec.global_batch:
        return True
    written = checkpoint_world(ckpt)
    return written is not None and written != ws


def _topology(r: LaunchRequest, accel: Accelerator, run: RunSpec) -> tuple[Topology, list[str]]:
    from ds_wizard.core.batch.topology import resolve_topology
    from ds_wizard.launch.plan import world_size_for

    if r.hostfile is None and r.num_nodes is None and r.gpus_per_node is None \
            and r.num_gpus is None:
        return resolve_topology(num_gpus=run.world_size), []
    return world_size_for(r.num_gpus, accel, num_nodes=r.num_nodes,
                          gpus_per_node=r.gpus_per_node, hostfile=r.hostfile)


def plan_reshape(r: LaunchRequest, accel: Accelerator, run_dir: Path, info: RunInfo,
                 ckpt: rundir.CheckpointInfo, cfg: dict[str, Any], preset: Preset,
                 run: RunSpec) -> tuple[ReshapePlan, Topology]:
    """Decide a resume of ``run_dir`` from ``ckpt`` on the layout ``r`` asks for;
    ReshapeRefused (one line) for what cannot be done, before anything is written."""
    from ds_wizard.core.check.checker import check_config

    topo, topo_notes = _topology(r, accel, run)
    new_ws = topo.total_ranks
    old_ws = checkpoint_world(ckpt) or info.spec.world_size
    conversion = conversion_for(cfg, old_ws, new_ws, deepspeed_version()) \
        if new_ws != old_ws else Conversion(False, "the same number of ranks wrote it")
    gpu = None
    if accel.kind == "cuda":
        from ds_wizard.core.plan.fit import gpu_memory_from

        report = r.gpu_report
        if report is None and r.gpu_memory is None:
            from ds_wizard.core.plan.gpus import detect_gpus

            report = detect_gpus() if r.gpus is None else detect_gpus(visible=r.gpus)
        gpu = gpu_memory_from(r.gpu_memory, report)
    gb = getattr(r, "global_batch", None)
    split = resolve_split(cfg, new_ws, global_batch=gb, spec=preset.spec, gpu=gpu,
                          headroom=r.headroom, backend="mamba_ssm")
    new_cfg = with_split(cfg, split)
    report_ = check_config(new_cfg, new_ws)
    if not report_.valid:
        raise ReshapeRefused(f"the re-split config is refused on {new_ws} rank(s): "
                             f"{report_.errors[0]}")
    old = info.spec
    changed = split.global_batch != old.global_batch
    notes = list(topo_notes)
    notes.append(
        f"resuming on {new_ws} rank(s) instead of {old_ws}: global batch "
        + (f"{old.global_batch} → {split.global_batch} (asked with --global-batch; the LR "
           "schedule stays as it was)" if changed else f"{split.global_batch} kept")
        + f", split {split.formula} (was {old.global_batch} = {old.micro_batch} × "
        f"{old.grad_accum} × {old.world_size}; accumulation {old.grad_accum} → "
        f"{split.grad_accum})")
    notes.append(f"checkpoint: {conversion.reason}")
    seg = Segment(0, ckpt.step + 1, new_ws, topo.nodes, split.micro_batch, split.grad_accum,
                  split.global_batch, resumed_from=ckpt.tag,
                  universal=universal_tag(ckpt.tag) if conversion.universal else None,
                  started=datetime.now().isoformat(timespec="seconds"))
    new_run = replace(run, world_size=new_ws, nodes=topo.nodes,
                      micro_batch=split.micro_batch, grad_accum=split.grad_accum,
                      global_batch=split.global_batch)
    if topo.hosts:
        from ds_wizard.launch.command import HOSTFILE_NAME, write_hostfile

        hostfile = run_dir.resolve() / HOSTFILE_NAME
        if not r.dry_run:
            write_hostfile(hostfile, topo)
        new_run = replace(new_run, hostfile=str(hostfile))
    elif topo.nodes == 1:
        new_run = replace(new_run, hostfile=None)
    plan = ReshapePlan(new_run, new_cfg, ckpt, old_ws, split, conversion, seg, tuple(notes),
                       changed)
    return plan, topo


def commit_reshape(plan: ReshapePlan, run_dir: Path, say: Say,
                   runner: Callable[[Sequence[str], Say], None] = run_converter,
                   ) -> ReshapePlan:
    """Convert (when needed), then write the new segment and config. Returns the plan as
    carried out: a fallback to an older tag moves the segment's first step."""
    from ds_wizard.core.config.dsconfig import dumps

    paths = rundir.RunPaths(run_dir)
    seg, ckpt, notes = plan.segment, plan.checkpoint, list(plan.notes)
    if plan.conversion.universal:
        newer_first = [c for c in intact_tags(paths.checkpoints) if c.step <= ckpt.step]
        done = universal_for(paths.checkpoints, newer_first, say, runner)
        notes += done.notes
        ckpt = done.source
        seg = replace(seg, from_step=ckpt.step + 1, resumed_from=ckpt.tag, universal=done.tag)
        if done.seconds is None:
            notes.append(f"reusing {done.tag}, converted earlier and verified now")
    data = rundir.load_run_json(run_dir)
    atomic_write_text(paths.config, dumps(plan.config), backup=True)
    atomic_write_text(paths.run_json,
                      _dumps_json(with_segment(data, seg) | {"hostfile": plan.run.hostfile}))
    segs = segments_of(rundir.load_run_json(run_dir))
    notes.append(f"segment {segs[-1].index} of the run: from step {seg.from_step} on "
                 f"{seg.layout} ({seg.formula})")
    return replace(plan, checkpoint=ckpt, segment=segs[-1], notes=tuple(notes))


def _dumps_json(data: dict[str, Any]) -> str:
    import json

    return json.dumps(data, indent=2) + "\n"
