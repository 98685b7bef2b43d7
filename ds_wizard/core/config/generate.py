"""``ds-wizard generate`` decided: one DeepSpeed config per GPU count, written together
into an output directory (created where missing), as one :class:`Generated`.

    done = generate_configs(preset, [resolve_topology(num_gpus=n) for n in (1, 2, 4, 8)],
                            Path("configs"))
    done.as_list()        # the --json rows
    done.markdown_table() # the source document's table

The table is Markdown in the source document's own layout (each cell padded to its
header, the file name left to overflow), byte for byte: users paste it into their docs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ds_wizard.core.base.fsio import FileChange, ensure_dir, write_all
from ds_wizard.core.config.auto import auto_configure
from ds_wizard.core.config.dsconfig import dumps

if TYPE_CHECKING:
    from ds_wizard.core.batch.topology import Topology
    from ds_wizard.core.presets.lookup import Preset

TABLE_HEADERS = ("GPUs", "micro_batch", "grad_acc", "train_batch_size", "config file")


def config_filename(num_gpus: int) -> str:
    return f"deepspeed_{num_gpus}gpu.json"


@dataclass(frozen=True)
class GeneratedConfig:
    """One file: the GPU count it is for, its batch triplet, and what the write did."""

    gpus: int
    micro_batch: int
    grad_accum: int
    train_batch_size: int
    change: FileChange

    @property
    def file(self) -> Path:
        return self.change.path

    def as_dict(self) -> dict[str, Any]:
        ch = self.change
        return {"gpus": self.gpus, "train_micro_batch_size_per_gpu": self.micro_batch,
                "gradient_accumulation_steps": self.grad_accum,
                "train_batch_size": self.train_batch_size, "file": str(ch.path),
                "changed": ch.changed, "backup": str(ch.backup) if ch.backup else None}


@dataclass(frozen=True)
class Generated:
    """What ``generate`` wrote, in the order of the GPU counts."""

    preset: str
    source: str  # where the preset came from: builtin, a file, …
    out_dir: Path
    configs: tuple[GeneratedConfig, ...]
    created_dir: bool = False

    def as_list(self) -> list[dict[str, Any]]:
        """The ``--json`` rows."""
        return [c.as_dict() for c in self.configs]

    def markdown_table(self) -> list[str]:
        """The source document's table: each cell padded to its header's width."""
        widths = [len(h) for h in TABLE_HEADERS]

        def line(cells: Sequence[object]) -> str:
            padded = (f" {str(c).ljust(w)} " for c, w in zip(cells, widths, strict=True))
            return "|" + "|".join(padded) + "|"

        rows = [(c.gpus, c.micro_batch, c.grad_accum, c.train_batch_size,
                 config_filename(c.gpus)) for c in self.configs]
        return [line(TABLE_HEADERS), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                *(line(row) for row in rows)]

    def change_lines(self) -> list[str]:
        """Exactly which files changed: one line each, then the count."""
        lines = [f"created   {self.out_dir}/ (it did not exist)"] if self.created_dir else []
        changes = [c.change for c in self.configs]
        for ch in changes:
            if not ch.changed:
                lines.append(f"unchanged {ch.path} (already holds this config)")
            elif ch.created:
                lines.append(f"created   {ch.path}")
            else:
                lines.append(f"updated   {ch.path} (previous version: {ch.backup})")
        written = sum(ch.changed for ch in changes)
        lines.append(f"wrote {written} of {len(changes)} file(s)"
                     + (f", {len(changes) - written} already up to date"
                        if written < len(changes) else ""))
        return lines


def generate_configs(preset: Preset, topologies: Sequence[Topology], out_dir: Path, *,
                     precision: str = "auto", zero_stage: int | None = None) -> Generated:
    """A config for each topology's data-parallel size, all built before any is written,
    then written as one (all change or none; a changed file keeps ``.bak``) into
    ``out_dir``, which is created (with its parents) where missing."""
    built = [(topo.data_parallel, auto_configure(preset, topo.data_parallel,
                                                 precision=precision, zero_stage=zero_stage))
             for topo in topologies]
    created = ensure_dir(out_dir)
    changes = write_all([(out_dir / config_filename(n), dumps(result.config))
                         for n, result in built])
    configs = tuple(
        GeneratedConfig(n, r.choice.micro_batch, r.choice.grad_accum, r.choice.global_batch, ch)
        for (n, r), ch in zip(built, changes, strict=True))
    return Generated(preset.name, preset.source, out_dir, configs, created)
