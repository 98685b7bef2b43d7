"""What ``ds-wizard tune`` measured on this machine, kept so later plans can use it.

One plain JSON file, ``measured.json`` in the user's data directory
(``platformdirs.user_data_path("ds-wizard")``, or ``$DS_WIZARD_DATA_DIR``), that a user may
read, edit or delete. Each entry is one tune: the machine (device kind, GPU or CPU name,
its memory), the preset's fingerprint (what changes memory: the model, sequence length,
precision, activation checkpointing), the world size and global batch, every candidate
measured, and the one chosen.

``plan``, ``--auto``, ``launch`` and the wizard look an entry up with :func:`lookup` for
the preset, world size and machine they plan for; when one matches they show "measured
here" beside the estimate and use the measured choice (:func:`measured_choice`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.base.fsio import read_text
from ds_wizard.core.plan.memory import GiB
from ds_wizard.core.presets.schema import PresetSpec

ENV_DATA_DIR = "DS_WIZARD_DATA_DIR"
RECORD_NAME = "measured.json"
RECORD_VERSION = 1
MAX_ENTRIES = 200  # oldest dropped first: the file stays small enough to read by eye


def data_dir() -> Path:
    override = os.environ.get(ENV_DATA_DIR, "").strip()
    if override:
        return Path(override).expanduser()
    from platformdirs import user_data_path

    return user_data_path("ds-wizard")


def record_path() -> Path:
    return data_dir() / RECORD_NAME


@dataclass(frozen=True)
class Machine:
    """What a measurement is valid for."""

    device: str  # "cuda" | "cpu"
    name: str  # the GPU's name, or the CPU's model name
    memory: int  # bytes of one GPU, or the host's RAM

    @property
    def label(self) -> str:
        what = "GPU" if self.device == "cuda" else "CPU host"
        return f"{self.name} ({what}, {self.memory / GiB:.0f} GiB)"

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "name": self.name, "memory_bytes": self.memory}


def _cpu_name() -> str:
    try:
        for line in read_text("/proc/cpuinfo", limit=16 << 20, what="cpuinfo",
                              errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except DsWizardError:
        pass  # no /proc (not Linux): the platform module's answer below
    import platform

    return platform.processor() or platform.machine() or "unknown CPU"


def this_machine(gpu_report: Any | None) -> Machine:
    """This machine as a record key: its smallest GPU, or its CPU and RAM."""
    gpus = getattr(gpu_report, "gpus", None) or []
    if gpus:
        g = min(gpus, key=lambda g: g.memory_total)
        return Machine("cuda", g.name, int(g.memory_total))
    import psutil

    return Machine("cpu", _cpu_name(), int(psutil.virtual_memory().total))


def fingerprint(spec: PresetSpec) -> str:
    """What the memory of a step depends on, hashed: not the batch (entries carry theirs)."""
    from dataclasses import asdict

    t = spec.train
    key = {"model": asdict(spec.model), "seq_len": t.seq_len, "precision": t.precision,
           "activation_checkpointing": t.activation_checkpointing}
    blob = json.dumps(key, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class Entry:
    """One tune's record (the JSON object, with typed accessors)."""

    data: dict[str, Any]

    @property
    def chosen(self) -> dict[str, Any] | None:
        c = self.data.get("chosen")
        return c if isinstance(c, dict) else None

    @property
    def candidates(self) -> list[dict[str, Any]]:
        c = self.data.get("candidates")
        return [x for x in c if isinstance(x, dict)] if isinstance(c, list) else []

    def measured_micro(self) -> dict[int, dict[str, Any]]:
        """Micro-batch → its measurement, for the candidates that ran at the chosen stage."""
        stage = (self.chosen or {}).get("zero_stage")
        return {int(c["micro_batch"]): c for c in self.candidates
                if c.get("zero_stage") == stage and "micro_batch" in c}

    def line(self) -> str:
        """``measured here: 8 × 1 × 2, ZeRO-2: peak 0.91 GiB per rank (model 1.02 GiB),
        612 tokens/s (tune of 2026-12-08)``"""
        c = self.chosen
        if c is None:
            return (f"measured here: no candidate fitted at global batch "
                    f"{self.data.get('global_batch')} (tune of {self.when})")
        peak = c.get("measured_peak_bytes") or 0
        pred = c.get("predicted_peak_bytes") or 0
        what = "per GPU" if self.data.get("machine", {}).get("device") == "cuda" \
            else "RSS per rank"
        return (f"measured here: {c.get('label')}: peak {peak / GiB:.2f} GiB {what} "
                f"(model {pred / GiB:.2f} GiB), {c.get('tokens_per_s') or 0:,.0f} tokens/s "
                f"(tune of {self.when}; {record_path()})")

    @property
    def when(self) -> str:
        return str(self.data.get("measured_at", "?"))[:10]


def _read() -> list[dict[str, Any]]:
    path = record_path()
    if not path.exists() and not path.is_symlink():
        return []
    try:
        raw = read_text(path, limit=64 << 20, what="measurements file")
    except DsWizardError as exc:
        raise DsWizardError(exc.message, "fix it, or delete it (it only holds measurements)"
                            ) from exc
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise DsWizardError(f"{path} is not valid JSON ({exc})",
                            "delete it: it only holds tune measurements") from exc
    entries = data.get("entries") if isinstance(data, dict) else None
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def lookup(spec: PresetSpec, world_size: int, machine: Machine,
           global_batch: int | None = None) -> Entry | None:
    """The newest entry for this preset fingerprint, world size and machine (and global
    batch, when given); None when none matches or the record is unreadable."""
    try:
        entries = _read()
    except DsWizardError:
        return None  # a damaged record must never stop a plan; `tune` reports it
    fp = fingerprint(spec)
    for e in reversed(entries):
        m = e.get("machine", {})
        if (e.get("fingerprint") == fp and e.get("world_size") == world_size
                and m.get("device") == machine.device and m.get("name") == machine.name
                and m.get("memory_bytes") == machine.memory
                and (global_batch is None or e.get("global_batch") == global_batch)):
            return Entry(e)
    return None


def add(entry: dict[str, Any], spec: PresetSpec, machine: Machine) -> Path:
    """Append one tune's record (atomically); returns the file's path."""
    from ds_wizard.core.base.fsio import atomic_write_text

    entries = _read()
    entries.append({"fingerprint": fingerprint(spec), "machine": machine.to_dict(),
                    "measured_at": datetime.now().isoformat(timespec="seconds"), **entry})
    path = record_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DsWizardError(f"cannot create {path.parent}: {exc.strerror or exc}",
                            f"set {ENV_DATA_DIR} to a writable directory") from exc
    text = json.dumps({"version": RECORD_VERSION,
                       "about": "ds-wizard tune measurements; safe to delete",
                       "entries": entries[-MAX_ENTRIES:]}, indent=2)
    atomic_write_text(path, text + "\n")
    return path


def measured_choice(entry: Entry | None, global_batch: int) -> tuple[int, int, int] | None:
    """(micro, accumulation, ZeRO stage) the entry chose at this global batch, or None."""
    if entry is None or entry.chosen is None or entry.data.get("global_batch") != global_batch:
        return None
    c = entry.chosen
    return int(c["micro_batch"]), int(c["grad_accum"]), int(c["zero_stage"])


def here_entry(spec: PresetSpec, world_size: int, gpu_report: Any | None) -> Entry | None:
    """The newest tune of this preset at this world size on this machine, if any."""
    try:
        machine = this_machine(gpu_report)
    except (OSError, ImportError):
        return None
    return lookup(spec, world_size, machine)
