"""``ds-wizard fix`` decided: the batch triplet of a config file repaired for a world size
as the smallest textual edit, written atomically (the old file kept as ``.bak``), then
checked again, as one :class:`Repair`. It sits in ``config``: a full rewrite uses the one
JSON format of :mod:`core.config.dsconfig`.

    done = repair_file(Path("ds.json"), world, keep="micro")
    done.valid, done.as_dict(), done.lines()

Only the changed values are edited in the file's text (comments, trailing commas and key
order stay); a full rewrite happens only when the text has a shape the editor does not
handle, and the result says so. The JSON and the text are read from the same object.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ds_wizard.core.base.errors import ConfigFileError, DsWizardError
from ds_wizard.core.base.fsio import atomic_write_text, read_input
from ds_wizard.core.check.checker import (
    BATCH_KEYS,
    MAX_CONFIG_BYTES,
    check_config,
    fix_config,
    load_config_file,
    parse_config_bytes,
)
from ds_wizard.core.check.hfmode import HfFill, fill_like_trainer, parse_hf_args
from ds_wizard.core.check.textedit import TextEditError, set_top_level
from ds_wizard.core.config.dsconfig import dumps

if TYPE_CHECKING:
    from ds_wizard.core.batch.world import WorldSize
    from ds_wizard.core.config.filecheck import DeepCheck

@dataclass(frozen=True)
class Repair:
    """What ``fix`` changed (or would change), where it wrote, and what remains wrong."""

    config: Path
    world: WorldSize
    batch_world: int  # the data-parallel size DeepSpeed computes the batch with
    keep: str
    hf_mode: bool
    before_cfg: dict[str, Any]
    new_values: dict[str, Any]
    target: Path
    notes: tuple[str, ...] = ()
    before_formula: str = ""
    after_formula: str = ""
    before_error: str = ""
    derived: dict[str, Any] = field(default_factory=dict)
    written: Path | None = None
    backup: Path | None = None
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()  # what still fails, which fix does not change
    deep: Any = None  # ds_wizard.deepcheck.DeepVerdict; None when problems remain

    @property
    def valid(self) -> bool:
        return not self.problems and (self.deep is None or self.deep.accepted)

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` object."""
        out: dict[str, Any] = {
            "config": str(self.config), "world_size": self.batch_world,
            "total_ranks": self.world.total_ranks,
            "changes": {k: [self.before_cfg.get(k), v] for k, v in self.new_values.items()},
            "notes": list(self.notes), "before": self.before_formula,
            "after": self.after_formula, "output": str(self.target)}
        if self.written is not None:
            out["backup"] = str(self.backup) if self.backup else None
        out.update(written=str(self.written) if self.written else None,
                   errors=list(self.errors), warnings=list(self.warnings))
        if not self.problems:
            out["deep"] = self.deep.to_dict() if self.deep is not None else None
        out["valid"] = self.valid
        return out

    def lines(self) -> list[str]:
        """The text report: the change, where it went, then what the checks say."""
        lines = self._change_lines()
        if self.written is not None:
            lines.append(f"wrote {self.target}"
                         + (f" (previous version: {self.backup})" if self.backup else ""))
        elif self.new_values:
            lines.append(f"dry run: {self.target} not written")
        if self.problems:
            lines.append(f"✗ {len(self.problems)} problem(s) remain, which fix does not change "
                         f"(see `ds-wizard check {self.target} {self.world.flags}`):")
            return lines + [f"  ✗ {e}" for e in self.problems]
        lines += [f"  ⚠ {w}" for w in self.warnings]
        if self.deep is not None:
            lines.append(f"deep check: {self.deep.line()}")
        return lines

    def _change_lines(self) -> list[str]:
        cfg, new = self.before_cfg, self.new_values
        if not new:
            lines = [f"✅ nothing to fix: the batch triplet in {self.config} is valid for "
                     f"{self.world.describe()}"
                     + (f": {self.after_formula}" if self.after_formula else "")]
            return lines + [f"  note: {note}" for note in self.notes]
        lines = [f"fixing {self.config} for {self.world.describe()}"
                 + ("" if self.hf_mode else ", keeping " + (
                     "micro-batch and accumulation" if self.keep == "micro"
                     else "train_batch_size"))]
        kept = {"micro": (BATCH_KEYS[1], BATCH_KEYS[2]), "global": (BATCH_KEYS[0],)}[self.keep]
        for key in BATCH_KEYS:
            shown = json.dumps(cfg[key], ensure_ascii=False) if key in cfg else "(missing)"
            if key in new:
                lines.append(f"  {key:<31} {shown} → {json.dumps(new[key], ensure_ascii=False)}")
            elif not self.hf_mode and key not in cfg and self.derived.get(key) is not None:
                lines.append(f"  {key:<31} (left out: DeepSpeed derives {self.derived[key]})")
            elif not self.hf_mode:
                lines.append(f"  {key:<31} {shown}" + ("  (kept)" if key in kept else ""))
        if self.before_error:
            lines.append(f"before: {self.before_formula or 'incomplete'}   ✗ DeepSpeed: "
                         f"{self.before_error}")
        elif not self.hf_mode:
            lines.append("before: ✗ not usable as written: " + ", ".join(
                f"{k}={json.dumps(cfg.get(k), ensure_ascii=False)}" for k in new))
        if self.after_formula:
            lines.append(f"after:  {self.after_formula}   ✅")
        return lines + [f"  note: {note}" for note in self.notes]


def repair_file(config: Path, world: WorldSize, *, keep: str = "micro",
                output: Path | None = None, dry_run: bool = False, strict: bool = False,
                sp: int = 1, sp_flag: int | None = None, hf: str | None = None,
                hf_args: Path | None = None, deep: DeepCheck | None = None) -> Repair:
    """Repair ``config``'s batch for ``world`` (``keep``: ``micro`` keeps micro-batch and
    accumulation, ``global`` keeps train_batch_size); with ``hf``/``hf_args``, as the HF
    Trainer needs it. Written to ``output`` (default: over ``config``) unless ``dry_run``.
    Then checked again: fix repairs the batch only, so anything else still wrong makes
    ``valid`` false, and DeepSpeed's own parser (``deep``) has the last word."""
    cfg = load_config_file(config)
    # exactly as stored (BOM, CRLF): the edit must not touch the lines it does not change
    text = read_input(config, limit=MAX_CONFIG_BYTES, what=".json config file",
                      error=ConfigFileError).decode("utf-8")
    base_world = world.data_parallel * sp
    batch_world = _batch_world(cfg, base_world, sp_flag)
    hf_fill = None
    if hf is not None or hf_args is not None:
        hf_fill = fill_like_trainer(cfg, parse_hf_args(hf, hf_args, world.data_parallel))
    if hf_fill is not None:
        new_values, notes = _hf_values(cfg, hf_fill)
        facts: dict[str, Any] = {}
    else:
        new_cfg, before, after = fix_config(cfg, batch_world, keep=keep)  # type: ignore[arg-type]
        new_values = {k: new_cfg[k] for k in BATCH_KEYS if k in new_cfg and (
            cfg.get(k) != new_cfg[k] or type(cfg.get(k)) is not type(new_cfg[k]))}
        new_values = _leave_derived_keys_out(cfg, new_values, batch_world)
        notes = []
        facts = {"before_formula": before.formula, "after_formula": after.formula,
                 "before_error": before.error and f"{before.error_type}: {before.error}",
                 "derived": dict(zip(BATCH_KEYS, (after.train_batch_size, after.micro_batch,
                                                  after.grad_accum), strict=True))}
    target = output or config
    new_text, edit_note = _edited_text(text, cfg, new_values)
    written = backup = None
    # read back before writing: fix never writes a file it (or check) would refuse to read
    checked = parse_config_bytes(new_text.encode("utf-8"), str(target))
    if new_values and not dry_run:
        backup = atomic_write_text(target, new_text, backup=True)
        written = target
    if hf_fill is not None:
        checked = fill_like_trainer(checked, parse_hf_args(hf, hf_args, world.data_parallel)
                                    ).config
    report = check_config(checked, base_world, strict=strict, sequence_parallel=sp_flag)
    problems = report.errors + (report.warnings if strict else [])
    verdict = deep(checked, base_world) if deep is not None and not problems else None
    return Repair(config, world, batch_world, keep, hf_fill is not None, cfg, new_values,
                  target, tuple(notes + ([edit_note] if edit_note else [])), written=written,
                  backup=backup, errors=tuple(report.errors), warnings=tuple(report.warnings),
                  problems=tuple(problems), deep=verdict, **facts)


def _leave_derived_keys_out(cfg: dict[str, Any], new_values: dict[str, Any],
                            world: int) -> dict[str, Any]:
    """A key the file leaves out stays out when DeepSpeed derives the intended value from
    the others anyway: the smallest edit (the file's author left it out on purpose)."""
    from ds_wizard.core.check.verdict import batch_outcome

    intended = tuple(new_values.get(k, cfg.get(k)) for k in BATCH_KEYS)
    written = dict(zip(BATCH_KEYS, intended, strict=True))
    for key in [k for k in BATCH_KEYS if k in new_values and k not in cfg]:
        trial = {**written, key: None}
        triplet, error, _, _ = batch_outcome(*trial.values(), world)
        if error is None and triplet == intended:
            written = trial
            new_values = {k: v for k, v in new_values.items() if k != key}
    return new_values


def _batch_world(cfg: dict[str, Any], base_world: int, sp_flag: int | None) -> int:
    """The data-parallel size DeepSpeed computes the batch with, as a whole number."""
    sp = cfg.get("sequence_parallel_size", sp_flag or 1)
    if isinstance(sp, bool) or not isinstance(sp, int) or sp < 1 or base_world % sp:
        raise DsWizardError(
            f"sequence_parallel_size {json.dumps(sp)} does not divide the world size "
            f"{base_world}", "write a whole number that divides the number of GPUs")
    return base_world // sp


def _hf_values(cfg: dict[str, Any], filled: HfFill) -> tuple[dict[str, Any], list[str]]:
    """Under the HF Trainer: "auto" stays where the Trainer fills it; hard-coded values
    that disagree with TrainingArguments become the Trainer's numbers."""
    values: dict[str, Any] = {}
    notes = []
    for key in BATCH_KEYS:
        if cfg.get(key) == "auto":
            notes.append(f'{key} stays "auto": the Trainer fills in {filled.config[key]}')
    for line in filled.mismatches:
        # "- ds train_batch_size=16 vs hf train_batch_size (calculated)=32"
        ds_part, _, hf_part = line[len("- ds "):].partition(" vs hf ")
        key = ds_part.partition("=")[0]
        if key in BATCH_KEYS:
            values[key] = json.loads(hf_part.rpartition("=")[2])
        else:
            notes.append(f"{key} disagrees with TrainingArguments ({line.strip('- ')}); "
                         'fix does not change it: set it to "auto" or to the argument')
    return values, notes


def _edited_text(text: str, cfg: dict[str, Any], new_values: dict[str, Any]
                 ) -> tuple[str, str | None]:
    """The file's text with only ``new_values`` changed; a full rewrite only when the
    text has a shape the editor does not handle (said in the note)."""
    if not new_values:
        return text, None
    expected = {**cfg, **new_values}
    try:
        edited = set_top_level(text, new_values, list(BATCH_KEYS))
        if parse_config_bytes(edited.encode("utf-8")) == expected:
            return edited, None
    except (TextEditError, ConfigFileError):
        pass  # fall through to the full rewrite below, which is always correct
    ordered = {**cfg}
    ordered.update(new_values)
    return dumps(ordered), ("the file was rewritten in full (its layout could not be edited "
                            "in place)")
