"""What the listing, ``show`` and ``diff`` views say about presets (shared by CLI and TUI)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.batch.choice import BatchChoice, choose_batch
from ds_wizard.core.plan.params import count_params
from ds_wizard.core.presets.lookup import (
    PresetEntry,
    check_name,
    list_presets,
    read_preset_file,
)
from ds_wizard.core.presets.schema import PresetSpec

COMMON_GPU_COUNTS = (1, 2, 4, 8)


@dataclass(frozen=True)
class PresetSummary:
    """One row of ``ds-wizard presets``; ``error`` is set (and the rest empty) when the
    file does not load, so one broken file on a team path does not hide the others."""

    name: str
    source: str
    path: Path
    shadows: tuple[str, ...]
    arch: str = ""
    params: int = 0
    description: str = ""
    based_on: str = ""
    notices: tuple[str, ...] = ()
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "path": str(self.path),
            "shadows": list(self.shadows),
            "arch": self.arch or None,
            "params": self.params or None,
            "description": self.description,
            "based_on": self.based_on or None,
            "notices": list(self.notices),
            "error": self.error,
        }


def summarize(entry: PresetEntry) -> PresetSummary:
    try:
        check_name(entry.name)
        preset = read_preset_file(entry.path, entry.name, entry.source)
    except DsWizardError as exc:
        return PresetSummary(entry.name, entry.source, entry.path, entry.shadows,
                             error=exc.one_line())
    spec = preset.spec
    return PresetSummary(
        entry.name, entry.source, entry.path, entry.shadows,
        arch=spec.model.arch, params=count_params(spec.model),
        description=spec.description, based_on=spec.based_on, notices=preset.notices,
    )


def summarize_all(cwd: Path | None = None) -> list[PresetSummary]:
    return [summarize(e) for e in list_presets(cwd)]


def batch_plans(
    spec: PresetSpec, gpu_counts: tuple[int, ...] = COMMON_GPU_COUNTS
) -> list[BatchChoice]:
    return [choose_batch(spec, n) for n in gpu_counts]


def flatten(spec: PresetSpec) -> dict[str, Any]:
    """Leaf path → value, e.g. ``model.n_layer`` → 64, ``batch.by_world_size.1.micro_batch``."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), sub)
        else:
            out[prefix] = value

    walk("", spec.to_dict())
    return out


MISSING = object()


@dataclass(frozen=True)
class FieldDiff:
    path: str
    a: Any  # MISSING when only b has the field
    b: Any


def diff_specs(a: PresetSpec, b: PresetSpec) -> list[FieldDiff]:
    """Every leaf that differs, in schema order (fields only one side has come last)."""
    fa, fb = flatten(a), flatten(b)
    keys = list(fa) + [k for k in fb if k not in fa]
    return [
        FieldDiff(k, fa.get(k, MISSING), fb.get(k, MISSING))
        for k in keys
        if k != "schema_version" and fa.get(k, MISSING) != fb.get(k, MISSING)
    ]


@dataclass(frozen=True)
class FileValidation:
    """``presets validate`` on one file: its problems (none: valid), its migration notes
    and a one-line summary of what it trains."""

    path: Path
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    summary: str = ""

    @property
    def valid(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "valid": self.valid, "problems": list(self.problems),
                "notes": list(self.notes), "summary": self.summary}


def validate_preset_file(path: Path, *, strict: bool = False) -> FileValidation:
    """Load ``path`` as a preset exactly as ds-wizard would; ``strict`` also fails a file
    that needs migrating or lacks ``schema_version``."""
    from ds_wizard.core.plan.params import breakdown, human_count
    from ds_wizard.core.presets.lookup import PresetValidationError

    notes: tuple[str, ...] = ()
    try:
        check_name(path.stem if path.suffix == ".toml" else path.name)
        if path.suffix != ".toml":
            raise DsWizardError(f"{path}: a preset file name must end in .toml")
        preset = read_preset_file(path)
        notes = preset.notices
        plans = batch_plans(preset.spec)
        summary = (f"{preset.spec.model.arch}, {human_count(breakdown(preset.spec.model).total)}"
                   f" params, batch {' / '.join(c.formula for c in plans)}")
    except PresetValidationError as exc:
        return FileValidation(path, tuple(f"{path}: {p}" for p in exc.problems), notes)
    except DsWizardError as exc:
        line = exc.one_line()
        return FileValidation(path, (line if line.startswith(str(path)) else f"{path}: {line}",),
                              notes)
    problems = tuple(f"--strict: {n}" for n in notes) if strict else ()
    return FileValidation(path, problems, notes, summary)
