"""Run directories and checkpoint bookkeeping, without torch or DeepSpeed.

A run lives in ``runs/<preset>-<YYYYmmdd-HHMMSS>/``::

    run.json              what was launched (preset, ranks, data, steps): read by --resume
    ds_config.json        the DeepSpeed config every rank loads
    preset.toml           the preset snapshot, --set overrides applied
    command.txt           the exact launcher command of the latest launch
    launch_deepspeed.sh   re-runs the first launch by hand (extra args are appended)
    train.log             everything the launcher and the ranks printed
    metrics.jsonl         one JSON object per logged step (rank 0)
    checkpoints/global_stepN/   DeepSpeed checkpoint + our completeness marker
    final/                weights for ``from_pretrained`` once the run finishes

DeepSpeed writes its ``latest`` file with a plain ``open('w')`` before its final barrier,
so a crash can leave ``latest`` naming a half-written tag. We never read ``latest``:
after ``save_checkpoint`` returns on every rank and a barrier, rank 0 writes
``ds_wizard_complete.json`` into the tag directory atomically. The marker records the
size and SHA-256 of every file of the tag (``core.integrity``); resume takes the newest
tag whose marker is valid *and* whose files still match it, and says why it passed over
newer ones. Nothing is ``torch.load``-ed before its tag has verified (docs/checkpoints.md).
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.base.fsio import atomic_write_text, read_json
from ds_wizard.core.runs import integrity

#: bytes of run.json or a checkpoint marker (kilobytes in practice)
MAX_RUN_FILE_BYTES = 4 << 20

RUN_JSON = "run.json"
CONFIG_JSON = "ds_config.json"
PRESET_TOML = "preset.toml"
COMMAND_TXT = "command.txt"
LAUNCH_SH = "launch_deepspeed.sh"
TRAIN_LOG = "train.log"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
FINAL = "final"
MARKER = "ds_wizard_complete.json"
TAG_PREFIX = "global_step"
_TAG_RE = re.compile(rf"^{TAG_PREFIX}(\d+)$")
_NAME_RE = re.compile(r"[^A-Za-z0-9._-]+")


class RunError(DsWizardError):
    """A run directory or checkpoint that cannot be used."""


@dataclass(frozen=True)
class RunPaths:
    """Every file of one run, derived from its directory."""

    root: Path

    @property
    def run_json(self) -> Path:
        return self.root / RUN_JSON

    @property
    def config(self) -> Path:
        return self.root / CONFIG_JSON

    @property
    def preset(self) -> Path:
        return self.root / PRESET_TOML

    @property
    def command(self) -> Path:
        return self.root / COMMAND_TXT

    @property
    def script(self) -> Path:
        return self.root / LAUNCH_SH

    @property
    def log(self) -> Path:
        return self.root / TRAIN_LOG

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def final(self) -> Path:
        return self.root / FINAL


def run_name(preset_name: str, now: datetime | None = None) -> str:
    """``tiny_mamba-20261128-131839``; odd characters in the preset name become ``_``."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    safe = _NAME_RE.sub("_", preset_name).strip("._-") or "run"
    return f"{safe}-{stamp}"


def create_run_dir(runs_dir: str | Path, preset_name: str, now: datetime | None = None) -> Path:
    """Make a fresh run directory; a second run in the same second gets ``-2``, ``-3``…"""
    base = Path(runs_dir)
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"cannot create runs directory {base}: {exc.strerror or exc}",
                       "choose another with --runs-dir") from exc
    name = run_name(preset_name, now)
    for i in range(1, 1000):
        candidate = base / (name if i == 1 else f"{name}-{i}")
        try:
            # exist_ok=False: two launches racing for a name never share a directory
            candidate.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunError(f"cannot create {candidate}: {exc.strerror or exc}") from exc
        (candidate / CHECKPOINTS).mkdir()
        return candidate
    raise RunError(f"too many runs named {name} in {base}", "clean up old run directories")


def load_run_json(run_dir: str | Path) -> dict[str, Any]:
    """``run.json`` as a plain dict (``core.runspec.read_run_info`` gives the typed record)."""
    paths = RunPaths(Path(run_dir))
    if not paths.run_json.exists() and not paths.run_json.is_symlink():
        raise RunError(f"{run_dir} is not a ds-wizard run directory (no {RUN_JSON})",
                       "give a directory under runs/ made by `ds-wizard launch`")
    data = read_json(paths.run_json, limit=MAX_RUN_FILE_BYTES, what=RUN_JSON, error=RunError)
    if not isinstance(data, dict):
        raise RunError(f"{paths.run_json} is not a JSON object")
    return data


def list_runs(runs_dir: str | Path) -> list[Path]:
    """Run directories under ``runs_dir``, oldest first (by the time in run.json)."""
    base = Path(runs_dir)
    if not base.is_dir():
        return []
    found = []
    for child in base.iterdir():
        if (child / RUN_JSON).is_file():
            try:
                created = str(load_run_json(child).get("created", ""))
            except RunError:
                continue
            found.append((created, child.name, child))
    return [p for _, _, p in sorted(found)]


def resolve_run_ref(ref: str, runs_dir: str | Path, *, resumable: bool = False) -> Path:
    """A run named by ``ref``: ``latest``, a path to a run directory, a run's name under
    ``runs_dir``, or a unique prefix of one.

    ``latest`` is the newest run; with ``resumable`` (``--resume latest``), the newest run
    that has an intact checkpoint to resume from, so that a newer run that crashed before
    its first checkpoint is passed over.
    """
    if ref == "latest":
        found = list_runs(runs_dir)
        if not found:
            raise RunError(f"no runs under {runs_dir}",
                           "start one with `ds-wizard launch --preset NAME`")
        if not resumable:
            return found[-1]
        for run in reversed(found):
            if latest_intact(RunPaths(run).checkpoints, full=False).chosen is not None:
                return run
        raise RunError(f"no run under {runs_dir} has a complete checkpoint to resume from "
                       f"(newest: {found[-1]})", "start a new run instead")
    path = Path(ref).expanduser()
    if path.is_dir() and (path / RUN_JSON).exists():
        load_run_json(path)
        return path
    base = Path(runs_dir)
    if "/" not in ref and ref:
        if (base / ref / RUN_JSON).exists():
            load_run_json(base / ref)
            return base / ref
        matches = [p for p in list_runs(runs_dir) if p.name.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            names = ", ".join(p.name for p in matches[:4])
            raise RunError(f"{ref!r} matches {len(matches)} runs under {runs_dir} ({names})",
                           "give more of the name")
    if path.is_dir():
        load_run_json(path)  # a directory that is not a run: say so
    raise RunError(f"no run {ref!r} (not a run directory, nor a run under {runs_dir})",
                   "see `ds-wizard runs`, or pass a path or `latest`")


# -- checkpoints ---------------------------------------------------------------------------


def checkpoint_tag(step: int) -> str:
    return f"{TAG_PREFIX}{step}"


@dataclass(frozen=True)
class CheckpointInfo:
    tag: str
    step: int
    path: Path
    complete: bool
    # the marker's record of every file (size, sha256); None for a marker written before
    # ds-wizard recorded them, or for an incomplete tag
    files: dict[str, Any] | None = None


def write_marker(ckpt_dir: str | Path, tag: str, step: int, extra: dict[str, Any],
                 files: dict[str, Any] | None = None) -> Path:
    """Declare ``tag`` complete. Call only after every rank's save_checkpoint returned.

    ``files`` is :func:`core.integrity.manifest` of every file in the tag (the ranks hash
    their shares in parallel); without it the files are hashed here, in this process.
    """
    tag_dir = Path(ckpt_dir) / tag
    if files is None:
        names = integrity.tag_files(tag_dir, exclude=(MARKER,))
        files = integrity.manifest(integrity.digest_files(tag_dir, names))
    path = tag_dir / MARKER
    atomic_write_text(path, json.dumps({"tag": tag, "step": step, **extra,
                                        "hash": integrity.ALGORITHM, "files": files},
                                       indent=2) + "\n")
    return path


def clear_marker(ckpt_dir: str | Path, tag: str) -> None:
    """Withdraw ``tag``'s marker before the tag is written again (a crash half-way through
    the new save must not leave the old marker vouching for new files)."""
    with contextlib.suppress(FileNotFoundError):
        (Path(ckpt_dir) / tag / MARKER).unlink()


def read_marker(tag_dir: Path, step: int) -> dict[str, Any] | None:
    """The marker of ``tag_dir`` when it is valid for ``step``, else None."""
    try:
        data = read_json(tag_dir / MARKER, limit=MAX_RUN_FILE_BYTES, what="checkpoint marker")
    except DsWizardError:
        return None  # missing, a FIFO, too big or not JSON: not a valid marker
    if not (isinstance(data, dict) and data.get("step") == step
            and data.get("tag") == tag_dir.name):
        return None
    return data


def scan_checkpoints(ckpt_dir: str | Path) -> list[CheckpointInfo]:
    """Every ``global_stepN`` directory, oldest first, with whether it is complete."""
    base = Path(ckpt_dir)
    if not base.is_dir():
        return []
    out = []
    for child in base.iterdir():
        m = _TAG_RE.match(child.name)
        if m and child.is_dir():
            step = int(m.group(1))
            marker = read_marker(child, step)
            files = marker.get("files") if marker is not None else None
            # a marker whose record of the files is unreadable vouches for nothing
            complete = marker is not None and (files is None or isinstance(files, dict))
            out.append(CheckpointInfo(child.name, step, child, complete,
                                      files if isinstance(files, dict) else None))
    return sorted(out, key=lambda c: c.step)


def latest_complete(ckpt_dir: str | Path) -> CheckpointInfo | None:
    """The newest complete checkpoint; newer incomplete ones are skipped (not verified:
    :func:`latest_intact` checks the files)."""
    complete = [c for c in scan_checkpoints(ckpt_dir) if c.complete]
    return complete[-1] if complete else None


def check_checkpoint(info: CheckpointInfo, *, share: tuple[int, int] = (0, 1),
                     full: bool = True) -> list[str]:
    """What is wrong with a complete tag's files; [] when they are as written.

    A marker from before ds-wizard recorded checksums has nothing to verify against: its
    tag passes (:func:`unverified_note` says so).
    """
    if info.files is None:
        return []
    return integrity.verify_tag(info.path, info.files, share=share, exclude=(MARKER,),
                                full=full)


def unverified_note(info: CheckpointInfo) -> str | None:
    if info.files is None:
        return (f"checkpoint {info.tag} was written by an older ds-wizard without "
                "checksums: its files cannot be verified before loading")
    return None


@dataclass(frozen=True)
class ResumeChoice:
    """The checkpoint to resume from, and why newer ones were passed over."""

    chosen: CheckpointInfo | None
    notes: tuple[str, ...]


def damaged_note(info: CheckpointInfo, problems: list[str]) -> str:
    shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more"
                                       if len(problems) > 3 else "")
    return f"checkpoint {info.tag} is damaged and will not be loaded: {shown}"


def latest_intact(ckpt_dir: str | Path, *, full: bool = True) -> ResumeChoice:
    """The newest complete tag whose files verify, and a note for each one passed over.

    ``full=False`` checks presence and sizes only (a stat per file): what the launcher
    does to plan; the ranks verify the SHA-256 before they load anything.
    """
    notes = []
    found = scan_checkpoints(ckpt_dir)
    newest_complete = max((c.step for c in found if c.complete), default=-1)
    for c in found:
        if not c.complete and c.step > newest_complete:
            notes.append(f"skipping incomplete checkpoint {c.tag} (no completion marker)")
    for info in reversed([c for c in found if c.complete]):
        problems = check_checkpoint(info, full=full)
        if not problems:
            if (note := unverified_note(info)) is not None:
                notes.append(note)
            return ResumeChoice(info, tuple(notes))
        notes.append(damaged_note(info, problems))
    return ResumeChoice(None, tuple(notes))
