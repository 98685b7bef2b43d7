"""``ds-wizard checkpoint convert|export|verify``: a run's checkpoints, through DeepSpeed's
own tools (ds_wizard.launch.checkpoints)."""

from __future__ import annotations

import click

from ds_wizard.core.base.defaults import RUNS_DIR
from ds_wizard.core.base.errors import ExitCode
from ds_wizard.core.base.text import json_text

_runs_dir = click.option("--runs-dir", default=RUNS_DIR, show_default=True, metavar="DIR",
                         help="Where the runs live.")
_json = click.option("--json", "as_json", is_flag=True, help="The result as one JSON object.")
_tag = click.option("--tag", default=None, metavar="TAG",
                    help="A checkpoint tag (global_stepN); default: the newest intact one.")


@click.group("checkpoint")
def checkpoint() -> None:
    """Convert, export and verify a run's checkpoints.

    RUN is a run's name, a unique prefix of one, its directory, or `latest`.

    \b
    Examples:
      ds-wizard checkpoint verify latest
      ds-wizard checkpoint convert latest             # to DeepSpeed's universal format
      ds-wizard checkpoint export latest --to weights/  # from_pretrained loads it
    """


@checkpoint.command("convert")
@click.argument("run")
@_tag
@_runs_dir
@_json
def convert(run: str, tag: str | None, runs_dir: str, as_json: bool) -> None:
    """Convert a tag to a universal checkpoint (DeepSpeed's ds_to_universal), beside it
    as TAG_universal, verified and marked complete; the tag itself is not touched. A
    resume on another number of ranks (`launch --resume RUN --num-gpus N`) does this
    by itself.

    \b
    Examples:
      ds-wizard checkpoint convert latest
      ds-wizard checkpoint convert tiny_mamba-20261129 --tag global_step20
    """
    from ds_wizard.launch.checkpoints import convert_run

    result = convert_run(run, runs_dir, tag, (lambda _s: None) if as_json else click.echo)
    if as_json:
        click.echo(json_text(result.to_dict()))
        return
    how = ("converted earlier; verified and reused" if result.seconds is None
           else f"converted in {result.seconds:.1f} s")
    click.echo(f"✅ {result.universal_tag} from {result.source_tag} ({how}): {result.path}")


@checkpoint.command("export")
@click.argument("run")
@_tag
@click.option("--to", "to", required=True, metavar="DIR",
              help="A new (or empty) directory for the weights.")
@_runs_dir
@_json
def export(run: str, tag: str | None, to: str, runs_dir: str, as_json: bool) -> None:
    """Full weights of a tag in the backend's own format (transformers: config.json +
    model.safetensors), consolidated on the CPU by DeepSpeed's zero_to_fp32 code.

    \b
    Examples:
      ds-wizard checkpoint export latest --to weights/
      ds-wizard checkpoint export tiny_mamba-20261129 --tag global_step20 --to step20/
    """
    from ds_wizard.launch.checkpoints import export_run

    result = export_run(run, runs_dir, tag, to)
    click.echo(json_text(result.to_dict()) if as_json
               else f"✅ {result.line} in {result.seconds:.1f} s")


@checkpoint.command("verify")
@click.argument("run")
@_runs_dir
@_json
@click.pass_context
def verify(ctx: click.Context, run: str, runs_dir: str, as_json: bool) -> None:
    """Check every tag's files against its completion marker (size and SHA-256).
    Exit status 1 when a complete tag is damaged or none is intact.

    \b
    Examples:
      ds-wizard checkpoint verify latest
      ds-wizard checkpoint verify tiny_mamba-20261129 --json
    """
    from ds_wizard.launch.checkpoints import verify_run

    result = verify_run(run, runs_dir)
    if as_json:
        click.echo(json_text(result.to_dict()))
    else:
        for t in result.tags:
            mark = {"intact": "✅", "damaged": "❌", "incomplete": "⏳"}.get(t.status, "⚠️ ")
            ranks = f"{t.world_size} rank{'s' if t.world_size != 1 else ''}"
            what = f" (universal, from {t.universal_of})" if t.universal_of else \
                (f" ({ranks})" if t.world_size else "")
            click.echo(f"{mark} {t.tag}{what}: {t.status}"
                       + (f": {'; '.join(t.problems[:3])}" if t.problems else ""))
        if not result.tags:
            click.echo(f"no checkpoints in {result.run}")
    ctx.exit(ExitCode.OK if result.ok else ExitCode.PROBLEM)
