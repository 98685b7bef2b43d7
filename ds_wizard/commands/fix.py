"""``ds-wizard fix CONFIG``: repair the batch triplet in place, as a minimal textual edit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ds_wizard.commands.check_options import (
    dumps_json,
    hf_fill,
    hf_options,
    sequence_parallel_flag,
    strict_option,
)
from ds_wizard.commands.worldsize import WorldSize, resolve_world_size, world_size_options
from ds_wizard.core.base.errors import ConfigFileError, DsWizardError, ExitCode
from ds_wizard.core.base.fsio import atomic_write_text, read_input
from ds_wizard.core.check.checker import (
    BATCH_KEYS,
    MAX_CONFIG_BYTES,
    check_config,
    fix_config,
    load_config_file,
    parse_config_bytes,
)
from ds_wizard.core.check.textedit import TextEditError, set_top_level


@click.command("fix")
@click.argument("config", type=click.Path(path_type=Path), metavar="CONFIG")
@world_size_options
@click.option("--keep", type=click.Choice(["micro", "global"]), default="micro",
              show_default=True,
              help="micro: keep micro-batch and accumulation, recompute train_batch_size. "
                   "global: keep train_batch_size, choose micro-batch and accumulation.")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Write the repaired config here instead of over CONFIG.")
@click.option("--dry-run", is_flag=True, help="Show the change, write nothing.")
@strict_option
@hf_options
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report.")
def fix(config: Path, num_gpus: int | None, tp: int, pp: int, sp: int, keep: str,
        output: Path | None, dry_run: bool, strict: bool = False, hf: str | None = None,
        hf_args: Path | None = None, as_json: bool = False) -> None:
    """Repair train_batch_size / micro-batch / gradient accumulation for N GPUs.

    Only the changed values are edited in the file's text: comments, trailing
    commas, key order and every other line stay as they were, so `git diff`
    shows just the new numbers. The file is replaced atomically and the previous
    version is kept as CONFIG.bak. Running it again on a fixed file changes
    nothing. It ends with the deep check: DeepSpeed's own DeepSpeedConfig on
    the result, at this world size.

    With --hf (HF Trainer mode) it writes the numbers the Trainer needs, or
    leaves "auto" where the Trainer fills it in correctly, and says which.

    Exit status: 0 fixed or nothing to fix, 1 cannot fix (or problems other
    than the batch remain, see `ds-wizard check`), 2 usage error.

    \b
    Examples:
      ds-wizard fix deepspeed_config.json --num-gpus 4          # 16/4/8 -> 128
      ds-wizard fix ds.json --num-gpus 8 --keep global          # keep 128, re-split
      ds-wizard fix ds.json --num-gpus 4 -o deepspeed_4gpu.json # leave ds.json alone
      ds-wizard fix ds.json --num-gpus 4 --hf per_device_train_batch_size=4
    """
    try:
        _fix(config, num_gpus, tp, pp, sp, keep, output, dry_run, strict, hf, hf_args, as_json)
    except DsWizardError as exc:
        if not as_json:
            raise
        # scripts reading --json still get an object saying why
        click.echo(f"error: {exc.one_line()}", err=True)
        click.echo(dumps_json({"config": str(config), "valid": False, "written": None,
                               "errors": [exc.one_line()]}))
        click.get_current_context().exit(exc.exit_code)


def _fix(config: Path, num_gpus: int | None, tp: int, pp: int, sp: int, keep: str,
         output: Path | None, dry_run: bool, strict: bool, hf: str | None,
         hf_args: Path | None, as_json: bool) -> None:
    cfg = load_config_file(config)
    # exactly as stored (BOM, CRLF): the edit must not touch the lines it does not change
    text = read_input(config, limit=MAX_CONFIG_BYTES, what=".json config file",
                      error=ConfigFileError).decode("utf-8")
    ws = resolve_world_size(num_gpus, tp, pp, sp)
    sp_flag = sequence_parallel_flag(sp)
    base_world = ws.data_parallel * sp
    world = _batch_world(cfg, base_world, sp_flag)
    out: dict[str, Any] = {"config": str(config), "world_size": world,
                           "total_ranks": ws.total_ranks}
    filled = hf_fill(cfg, hf, hf_args, ws.data_parallel)
    if filled is not None:
        new_values, notes = _hf_values(cfg, filled)
        before_formula = after_formula = before_error = ""
        derived: dict[str, Any] = {}
    else:
        new_cfg, before, after = fix_config(cfg, world, keep=keep)  # type: ignore[arg-type]
        new_values = {k: new_cfg[k] for k in BATCH_KEYS if k in new_cfg and (
            cfg.get(k) != new_cfg[k] or type(cfg.get(k)) is not type(new_cfg[k]))}
        new_values = _leave_derived_keys_out(cfg, new_values, world)
        notes = []
        before_formula, after_formula = before.formula, after.formula
        derived = dict(zip(BATCH_KEYS, (after.train_batch_size, after.micro_batch,
                                        after.grad_accum), strict=True))
        before_error = before.error and f"{before.error_type}: {before.error}"
    target = output or config
    new_text, edit_note = _edited_text(text, cfg, new_values)
    out.update(changes={k: [cfg.get(k), v] for k, v in new_values.items()}, notes=notes,
               before=before_formula, after=after_formula, output=str(target))
    say = _Printer(as_json)
    if not new_values:
        say(f"✅ nothing to fix: the batch triplet in {config} is valid for {ws.describe()}"
            + (f": {after_formula}" if after_formula else ""))
    else:
        say(f"fixing {config} for {ws.describe()}"
            + ("" if filled else ", keeping " + ("micro-batch and accumulation"
                                                 if keep == "micro" else "train_batch_size")))
        kept = {"micro": (BATCH_KEYS[1], BATCH_KEYS[2]), "global": (BATCH_KEYS[0],)}[keep]
        for key in BATCH_KEYS:
            shown = json.dumps(cfg[key], ensure_ascii=False) if key in cfg else "(missing)"
            if key in new_values:
                say(f"  {key:<31} {shown} → {json.dumps(new_values[key], ensure_ascii=False)}")
            elif not filled and key not in cfg and derived.get(key) is not None:
                say(f"  {key:<31} (left out: DeepSpeed derives {derived[key]})")
            elif not filled:
                say(f"  {key:<31} {shown}" + ("  (kept)" if key in kept else ""))
        if before_error:
            say(f"before: {before_formula or 'incomplete'}   ✗ DeepSpeed: {before_error}")
        elif not filled:
            say("before: ✗ not usable as written: " + ", ".join(
                f"{k}={json.dumps(cfg.get(k), ensure_ascii=False)}" for k in new_values))
        if after_formula:
            say(f"after:  {after_formula}   ✅")
    for note in notes + ([edit_note] if edit_note else []):
        say(f"  note: {note}")
    written = None
    if new_values and not dry_run:
        # never write a file that fix (or check) would then refuse to read
        parse_config_bytes(new_text.encode("utf-8"), str(target))
        backup = atomic_write_text(target, new_text, backup=True)
        written = str(target)
        out["backup"] = str(backup) if backup else None
        say(f"wrote {target}" + (f" (previous version: {backup})" if backup else ""))
    elif new_values:
        say(f"dry run: {target} not written")
    out["written"] = written
    final_cfg = parse_config_bytes(new_text.encode("utf-8"), str(target))
    ok = _final_checks(final_cfg, new_text, target, base_world, sp_flag, strict, ws, out, say,
                       filled is not None)
    out["valid"] = ok
    if as_json:
        click.echo(dumps_json(out))
    click.get_current_context().exit(ExitCode.OK if ok else ExitCode.PROBLEM)


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


class _Printer:
    """Text lines, unless --json (then the JSON object is the whole output)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def __call__(self, line: str) -> None:
        if not self.quiet:
            click.echo(line)


def _batch_world(cfg: dict[str, Any], base_world: int, sp_flag: int | None) -> int:
    """The data-parallel size DeepSpeed computes the batch with, as a whole number."""
    sp = cfg.get("sequence_parallel_size", sp_flag or 1)
    if isinstance(sp, bool) or not isinstance(sp, int) or sp < 1 or base_world % sp:
        raise DsWizardError(
            f"sequence_parallel_size {json.dumps(sp)} does not divide the world size "
            f"{base_world}", "write a whole number that divides the number of GPUs")
    return base_world // sp


def _hf_values(cfg: dict[str, Any], filled: Any) -> tuple[dict[str, Any], list[str]]:
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
    from ds_wizard.core.config.dsconfig import dumps

    ordered = {**cfg}
    ordered.update(new_values)
    return dumps(ordered), ("the file was rewritten in full (its layout could not be edited "
                            "in place)")


def _final_checks(cfg: dict[str, Any], text: str, path: Path, base_world: int,
                  sp_flag: int | None, strict: bool, ws: WorldSize, out: dict[str, Any],
                  say: _Printer, hf_mode: bool) -> bool:
    """fix repairs the batch only: anything else still wrong makes the exit status 1, and
    DeepSpeed's own parser has the last word, so ``fix && deepspeed ...`` never launches a
    config that fails at start-up."""
    checked = cfg
    if hf_mode:
        from ds_wizard.core.check.hfmode import fill_like_trainer, parse_hf_args

        click_ctx = click.get_current_context()
        args = parse_hf_args(click_ctx.params.get("hf"), click_ctx.params.get("hf_args"),
                             ws.data_parallel)
        checked = fill_like_trainer(cfg, args).config
    report = check_config(checked, base_world, strict=strict, sequence_parallel=sp_flag)
    out["errors"], out["warnings"] = report.errors, report.warnings
    if report.errors or (strict and report.warnings):
        problems = report.errors + (report.warnings if strict else [])
        say(f"✗ {len(problems)} problem(s) remain, which fix does not change "
            f"(see `ds-wizard check {path} {ws.flags}`):")
        for e in problems:
            say(f"  ✗ {e}")
        return False
    for w in report.warnings:
        say(f"  ⚠ {w}")
    try:
        from ds_wizard.deepcheck import deep_check
    except ImportError as exc:  # pragma: no cover - deepspeed is a dependency
        say(f"  ⚠ deep check skipped: DeepSpeed cannot be imported ({exc})")
        out["deep"] = None
        return True
    verdict = deep_check(checked, base_world)
    out["deep"] = verdict.to_dict()
    say(f"deep check: {verdict.line()}")
    return verdict.accepted
