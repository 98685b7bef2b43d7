"""``ds-wizard checkpoint``: what a user otherwise runs by hand on a run's checkpoints.

- :func:`convert_run`: a tag to DeepSpeed's universal checkpoint (``ds_to_universal``,
  through ``launch.reshape``), verified and marked like any tag;
- :func:`export_run`: a tag as weights ``from_pretrained`` loads, consolidated by
  DeepSpeed's zero_to_fp32 code in a CPU process of its own (``ds_wizard.train.export``);
- :func:`verify_run`: every tag against its completion marker (size and SHA-256 of each
  file).

DeepSpeed's own ``zero_to_fp32.py``/``zero_to_torch.py`` copies in the checkpoint
directory are left as they are.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.runs import rundir
from ds_wizard.core.runs.reshape import UNIVERSAL_SUFFIX, universal_problems
from ds_wizard.launch import reshape

Say = Callable[[str], None]
EXPORT_MODULE = "ds_wizard.train.export"


@dataclass(frozen=True)
class ConvertResult:
    run: str
    source_tag: str
    universal_tag: str
    path: str
    seconds: float | None  # None: an earlier conversion verified and reused
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _tag(paths: rundir.RunPaths, tag: str | None) -> list[rundir.CheckpointInfo]:
    """The intact tags to convert, newest first, starting at ``tag`` when given."""
    intact = reshape.intact_tags(paths.checkpoints)
    if tag is None:
        if not intact:
            raise rundir.RunError(f"{paths.root} has no intact checkpoint to convert")
        return intact
    found = {c.tag: c for c in rundir.scan_checkpoints(paths.checkpoints)}
    if tag not in found:
        raise rundir.RunError(f"no checkpoint {tag!r} in {paths.checkpoints}",
                              f"tags: {', '.join(found) or 'none'}")
    chosen = [c for c in intact if c.step <= found[tag].step]
    if not chosen or chosen[0].tag != tag:
        raise rundir.RunError(f"checkpoint {tag} is incomplete or damaged",
                              "run `ds-wizard checkpoint verify` on the run")
    return chosen[:1]  # the tag asked for, or nothing: no silent fallback


def convert_run(ref: str, runs_dir: str | Path, tag: str | None, say: Say) -> ConvertResult:
    run_dir = rundir.resolve_run_ref(ref, runs_dir)
    paths = rundir.RunPaths(run_dir)
    done = reshape.universal_for(paths.checkpoints, _tag(paths, tag), say)
    return ConvertResult(run_dir.name, done.source.tag, done.tag,
                         str(paths.checkpoints / done.tag), done.seconds, done.notes)


@dataclass(frozen=True)
class TagCheck:
    tag: str
    step: int
    status: str  # intact | damaged | incomplete | unverified
    problems: tuple[str, ...] = ()
    world_size: int | None = None
    universal_of: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VerifyResult:
    run: str
    tags: tuple[TagCheck, ...]

    @property
    def ok(self) -> bool:
        return all(t.status in ("intact", "unverified") for t in self.tags
                   if t.status != "incomplete") and any(t.status == "intact" for t in self.tags)

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "ok": self.ok, "tags": [t.to_dict() for t in self.tags]}


def verify_run(ref: str, runs_dir: str | Path) -> VerifyResult:
    """Every tag, regular and universal, against its completion marker (full SHA-256)."""
    run_dir = rundir.resolve_run_ref(ref, runs_dir)
    ckpts = rundir.RunPaths(run_dir).checkpoints
    out = []
    for info in rundir.scan_checkpoints(ckpts):
        out.append(_check(info, world=reshape.checkpoint_world(info) if info.complete
                          else None))
        uni = ckpts / f"{info.tag}{UNIVERSAL_SUFFIX}"
        if uni.is_dir():
            marker = rundir.read_marker(uni, info.step)
            files = marker.get("files") if marker else None
            uinfo = rundir.CheckpointInfo(uni.name, info.step, uni, marker is not None,
                                          files if isinstance(files, dict) else None)
            check = _check(uinfo, world=None, universal_of=info.tag)
            if check.status == "intact" and (more := universal_problems(uni)):
                check = TagCheck(check.tag, check.step, "damaged", tuple(more),
                                 universal_of=info.tag)
            out.append(check)
    return VerifyResult(run_dir.name, tuple(out))


def _check(info: rundir.CheckpointInfo, *, world: int | None,
           universal_of: str | None = None) -> TagCheck:
    if not info.complete:
        return TagCheck(info.tag, info.step, "incomplete", ("no completion marker",),
                        universal_of=universal_of)
    if info.files is None:
        return TagCheck(info.tag, info.step, "unverified",
                        (rundir.unverified_note(info) or "",), world, universal_of)
    problems = rundir.check_checkpoint(info)
    return TagCheck(info.tag, info.step, "damaged" if problems else "intact",
                    tuple(problems), world, universal_of)


@dataclass(frozen=True)
class ExportResult:
    run: str
    to: str
    line: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_run(ref: str, runs_dir: str | Path, tag: str | None, to: str | Path) -> ExportResult:
    """Consolidate a tag into ``to`` in a CPU process (torch and DeepSpeed live there)."""
    run_dir = rundir.resolve_run_ref(ref, runs_dir)
    dest = Path(to).expanduser()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DsWizardError(f"{dest} exists and is not an empty directory",
                            "give --to a new directory")
    cmd = [sys.executable, "-m", EXPORT_MODULE, "--run-dir", str(run_dir.resolve()),
           "--to", str(Path(to).expanduser().resolve())]
    if tag:
        cmd += ["--tag", tag]
    env = dict(os.environ)
    # CPU tensors and a CPU model: DeepSpeed's accelerator is the CPU even where GPUs exist
    env.update(DS_ACCELERATOR="cpu")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        said = [ln.removeprefix("error: ") for ln in proc.stderr.splitlines()
                if ln.startswith("error: ")]
        last = said[-1] if said else (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise DsWizardError(f"export of {run_dir.name} failed: {last}")
    line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "exported"
    return ExportResult(run_dir.name, str(to), line, time.perf_counter() - t0)
