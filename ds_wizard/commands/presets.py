"""``ds-wizard presets``: list, show, export, import, new, diff and validate preset files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ds_wizard.commands.common import resolve_preset, set_option
from ds_wizard.commands.numbers import parse_gpu_counts
from ds_wizard.commands.render import echo_json, echo_lines
from ds_wizard.core.base.errors import ExitCode, WriteError
from ds_wizard.core.base.fsio import atomic_write_text, check_output
from ds_wizard.core.base.text import json_text, sanitize
from ds_wizard.core.config.views import (
    COMMON_GPU_COUNTS,
    MISSING,
    batch_plans,
    diff_specs,
    summarize_all,
    validate_preset_file,
)
from ds_wizard.core.plan.params import breakdown, human_count
from ds_wizard.core.presets.lookup import (
    Preset,
    check_name,
    search_dirs,
)
from ds_wizard.core.presets.store import (
    Placement,
    derive_spec,
    export_text,
    import_preset,
    placement,
    save_user_preset,
    to_toml,
)


def _gpus_option(fn: Any) -> Any:
    return click.option(
        "--gpus", default=",".join(map(str, COMMON_GPU_COUNTS)), show_default=True,
        callback=parse_gpu_counts, metavar="N,N,…",
        help="Data-parallel sizes to plan the batch for.",
    )(fn)


def _count(n: int) -> str:
    return f"{n:,} ({human_count(n)})"


def _where(preset: Preset) -> str:
    return sanitize(f"{preset.source}: {preset.path}" if preset.path else preset.source)


@click.group("presets", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable listing.")
@click.pass_context
def presets(ctx: click.Context, as_json: bool) -> None:
    """List and share presets (TOML files). Bare `ds-wizard presets` lists them.

    \b
    Lookup order for a name: ./presets → each dir of $DS_WIZARD_PRESET_PATH (team)
    → the user config dir → the presets shipped with ds-wizard.

    \b
    Examples:
      ds-wizard presets
      ds-wizard presets show 7b_mamba --set model.n_layer=48
      ds-wizard presets new my_7b --from 7b_mamba --set train.lr=3e-4
      ds-wizard presets export my_7b -o my_7b.toml
      ds-wizard presets import teammate.toml --name their_7b
      ds-wizard presets diff 7b_mamba my_7b
      ds-wizard presets validate presets/*.toml
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_cmd, as_json=as_json)


@presets.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable listing.")
def list_cmd(as_json: bool) -> None:
    """Every preset on the lookup path: source, model, exact parameters, description.

    A name found in more than one directory is flagged; the first one wins.

    \b
    Examples:
      ds-wizard presets list
      ds-wizard presets list --json | jq '.presets[].name'
    """
    rows = summarize_all()
    dirs = search_dirs()
    if as_json:
        click.echo(json_text({
            "presets": [r.as_dict() for r in rows],
            "search_path": [
                {"source": d.source, "path": str(d.path), "exists": d.path.is_dir()}
                for d in dirs
            ],
        }))
        return
    if not rows:
        click.echo("no presets found")
    # names (file names), descriptions and errors come from files: sanitized before printing
    names = {r.name: sanitize(r.name) for r in rows}
    width = max((len(n) for n in names.values()), default=4)
    click.echo(f"{'NAME':<{width}}  {'SOURCE':<8} {'MODEL':<7} {'PARAMETERS':>24}  DESCRIPTION")
    for r in rows:
        name = names[r.name]
        if r.error:
            line = (f"{name:<{width}}  {r.source:<8} {'-':<7} {'-':>24}  "
                    f"INVALID: {sanitize(r.error)}")
        else:
            desc = sanitize(r.description)
            desc = desc if len(desc) <= 70 else desc[:67] + "..."
            line = f"{name:<{width}}  {r.source:<8} {r.arch:<7} {_count(r.params):>24}  {desc}"
        if r.shadows:
            line += f"  [shadows {', '.join(r.shadows)}]"
        click.echo(line)
    click.echo("\nlookup order (first match wins):")
    for d in dirs:
        click.echo(f"  {d.source:<8} {sanitize(d.path)}"
                   f"{'' if d.path.is_dir() else '  (missing)'}")


def _batch_table(name_plans: list[tuple[str, list[Any]]], seq_lens: list[int]) -> list[str]:
    lines = []
    header = f"{'GPUs':>5}"
    for label, _ in name_plans:
        header += f"  {label:<28}"
    lines.append(header.rstrip())
    for i, choice in enumerate(name_plans[0][1]):
        line = f"{choice.world_size:>5}"
        for (_, plans), seq in zip(name_plans, seq_lens, strict=True):
            c = plans[i]
            tokens = human_count(c.global_batch * seq)
            line += f"  {c.formula + f' ({tokens} tok)':<28}"
        lines.append(line.rstrip())
    return lines


@presets.command("show")
@click.argument("name", metavar="NAME|PATH")
@set_option
@_gpus_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show_cmd(name: str, sets: tuple[str, ...], gpus: list[int], as_json: bool) -> None:
    """Show one preset: its TOML, exact parameter count and the batch per GPU count.

    \b
    Examples:
      ds-wizard presets show 7b_mamba
      ds-wizard presets show mamba_1.4b --set batch.micro_batch=4 --gpus 1,8
    """
    preset = resolve_preset(name, sets)
    spec = preset.spec
    plans = batch_plans(spec, tuple(gpus))
    bd = breakdown(spec.model)
    if as_json:
        click.echo(json_text({
            "name": preset.name, "source": preset.source,
            "path": str(preset.path) if preset.path else None,
            "params": bd.total, "preset": spec.to_dict(),
            "batch": [
                {"gpus": c.world_size, "train_batch_size": c.global_batch,
                 "train_micro_batch_size_per_gpu": c.micro_batch,
                 "gradient_accumulation_steps": c.grad_accum,
                 "tokens_per_step": c.global_batch * spec.train.seq_len}
                for c in plans
            ],
            "notices": list(preset.notices),
        }))
        return
    click.echo(f"# {sanitize(preset.name)}  ({_where(preset)})")
    if sets:
        click.echo(f"# with --set {sanitize(' --set '.join(sets))}")
    click.echo(sanitize(to_toml(spec), keep_newlines=True), nl=False)
    click.echo()
    click.echo(f"parameters: {_count(bd.total)}  ({spec.model.arch})")
    lm_head = f"{bd.lm_head:,}" if bd.lm_head else "tied"
    click.echo(
        f"  embedding {bd.embedding:,} + {bd.n_layer} layers × {bd.per_layer:,}"
        f" + final norm {bd.final_norm:,}; lm head {lm_head}"
    )
    click.echo("\nbatch: global = micro × grad_accum × GPUs (data-parallel ranks)")
    for line in _batch_table([(preset.name, plans)], [spec.train.seq_len]):
        click.echo(line)


@presets.command("export")
@click.argument("name", metavar="NAME|PATH")
@click.option("-o", "--output", default="-", show_default=True, metavar="FILE|-",
              help="Where to write the TOML; - is stdout.")
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@set_option
def export_cmd(name: str, output: str, force: bool, sets: tuple[str, ...]) -> None:
    """Write a preset as a self-contained TOML file (every field explicit) to share.

    \b
    Examples:
      ds-wizard presets export 7b_mamba -o 7b_mamba.toml
      ds-wizard presets export 7b_mamba --set train.lr=3e-4 > variant.toml
    """
    preset = resolve_preset(name, sets)
    text = export_text(preset.name, preset.spec)
    if output == "-":
        click.echo(text, nl=False)
        return
    dest = Path(output)
    check_output(dest)  # a device, FIFO or directory is refused before anything else
    if dest.exists() and not force:
        raise WriteError(f"{dest} already exists", "pass --force to replace it")
    atomic_write_text(dest, text)
    click.echo(f"wrote {dest} (preset {preset.name!r}, from {preset.source})")


@presets.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=True))
@click.option("--name", "new_name", metavar="NEW",
              help="Save under this name (default: the file name).")
@click.option("--force", is_flag=True, help="Replace an existing user preset of that name.")
def import_cmd(file: Path, new_name: str | None, force: bool) -> None:
    """Validate a preset file and copy it into your user preset directory.

    Nothing is written if the file is invalid or the name is taken (use --force).

    \b
    Examples:
      ds-wizard presets import ~/Downloads/their_7b.toml
      ds-wizard presets import shared.toml --name team_7b --force
    """
    result = import_preset(file, new_name, force)
    for notice in result.notices:
        click.echo(f"note: {sanitize(notice)}", err=True)
    click.echo(f"imported {result.name!r} → {result.path}")
    _placement_notes(result.name, result.placement)


def _placement_notes(name: str, where: Placement) -> None:
    if where.shadowed_by:
        click.echo(
            f"note: a {where.shadowed_by} preset named {name!r} comes first on the "
            "lookup path, so that one is used for this name here",
            err=True,
        )
    elif where.shadows:
        click.echo(
            f"note: {name!r} now hides the {' and '.join(where.shadows)} preset of that name",
            err=True,
        )


@presets.command("new")
@click.argument("name")
@click.option("--from", "base", required=True, metavar="BASE", help="Preset to start from.")
@set_option
@click.option("--description", default=None, help="Description for the new preset.")
@click.option("--force", is_flag=True, help="Replace an existing user preset of that name.")
def new_cmd(
    name: str, base: str, sets: tuple[str, ...], description: str | None, force: bool
) -> None:
    """Create a user preset from BASE with overrides; it records based_on = BASE.

    \b
    Examples:
      ds-wizard presets new my_7b --from 7b_mamba --set model.n_layer=48
      ds-wizard presets new big_micro --from mamba_130m --set batch.micro_batch=32
    """
    check_name(name)
    preset = resolve_preset(base, sets)
    if description is None and sets:
        # the base's description no longer tells the whole story
        description = f"{preset.spec.description} (with {', '.join(sets)})".lstrip()[:500]
    spec = derive_spec(preset.spec, preset.name, description)
    header = [f"created with: ds-wizard presets new {name} --from {base}"
              + "".join(f" --set {s}" for s in sets)]
    dest = save_user_preset(name, spec, force=force, header=tuple(header))
    click.echo(f"created {name!r} → {dest}")
    _placement_notes(name, placement(name))


def _value(v: Any) -> str:
    return "(absent)" if v is MISSING else json.dumps(v)


@presets.command("diff")
@click.argument("a", metavar="A")
@click.argument("b", metavar="B")
@_gpus_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def diff_cmd(a: str, b: str, gpus: list[int], as_json: bool) -> None:
    """Field-by-field difference of two presets (names or paths), with parameter counts
    and batch triplets of both.

    \b
    Examples:
      ds-wizard presets diff 7b_mamba my_7b
      ds-wizard presets diff mamba_1.4b ./candidate.toml --gpus 8,16
    """
    counts = tuple(gpus)
    pa, pb = resolve_preset(a), resolve_preset(b)
    diffs = diff_specs(pa.spec, pb.spec)
    params = [breakdown(p.spec.model).total for p in (pa, pb)]
    plans = [batch_plans(p.spec, counts) for p in (pa, pb)]
    if as_json:
        click.echo(json_text({
            "a": {"name": pa.name, "source": pa.source, "params": params[0]},
            "b": {"name": pb.name, "source": pb.source, "params": params[1]},
            "fields": [
                {"path": d.path, "a": None if d.a is MISSING else d.a,
                 "b": None if d.b is MISSING else d.b}
                for d in diffs
            ],
            "batch": [
                {"gpus": ca.world_size, "a": [ca.micro_batch, ca.grad_accum, ca.global_batch],
                 "b": [cb.micro_batch, cb.grad_accum, cb.global_batch]}
                for ca, cb in zip(plans[0], plans[1], strict=True)
            ],
        }))
        return
    click.echo(f"a: {sanitize(pa.name)}  ({_where(pa)})")
    click.echo(f"b: {sanitize(pb.name)}  ({_where(pb)})")
    if diffs:
        width = max(len(d.path) for d in diffs)
        click.echo(f"\n{len(diffs)} field(s) differ:")
        for d in diffs:
            click.echo(f"  {d.path:<{width}}  {_value(d.a)}  →  {_value(d.b)}")
    else:
        click.echo("\nno field differs")
    click.echo(f"\nparameters: a {_count(params[0])}   b {_count(params[1])}")
    if params[0] != params[1]:
        delta = params[1] - params[0]
        click.echo(f"            b - a = {delta:+,} ({delta / params[0]:+.1%})")
    click.echo("\nbatch: global = micro × grad_accum × GPUs")
    for line in _batch_table([("a", plans[0]), ("b", plans[1])],
                             [pa.spec.train.seq_len, pb.spec.train.seq_len]):
        click.echo(line)


@presets.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--strict", is_flag=True,
              help="Also fail on files that need migrating or lack schema_version.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable results.")
def validate_cmd(files: tuple[Path, ...], strict: bool, as_json: bool = False) -> None:
    """Check preset files (for CI in a team's preset repo). Exit 1 if any is invalid.

    \b
    Examples:
      ds-wizard presets validate presets/*.toml
      ds-wizard presets validate --strict team-presets/*.toml
      ds-wizard presets validate --json presets/*.toml | jq '.files[] | select(.valid|not)'
    """
    results = [validate_preset_file(path, strict=strict) for path in files]
    failed = sum(not r.valid for r in results)
    if as_json:
        echo_json({"files": [r.as_dict() for r in results], "valid": len(files) - failed,
                   "invalid": failed})
    else:
        for r in results:
            if r.problems:
                echo_lines([f"FAIL  {sanitize(r.path)}", *(f"      {sanitize(p)}"
                                                         for p in r.problems)])
            else:
                echo_lines([f"ok    {sanitize(r.path)}  ({r.summary})",
                            *(f"      note: {sanitize(n)}" for n in r.notes)])
        click.echo(f"{len(files) - failed} valid, {failed} invalid")
    if failed:
        click.get_current_context().exit(ExitCode.PROBLEM)
