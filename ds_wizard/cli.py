"""Command line: ``ds-wizard`` opens the TUI; ``ds-wizard --auto`` and the subcommands are
the headless path. Commands are thin: they parse flags, call ``ds_wizard.core`` and print.

Exit codes: 0 OK, 1 the config is invalid or a problem was found, 2 usage error.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from ds_wizard import __version__
from ds_wizard.commands.auto import auto_options, check_auto_usage, run_auto
from ds_wizard.core.errors import DsWizardError


class WizardGroup(click.Group):
    """Turns DsWizardError into one ``error: …`` line and exit 1, anywhere below."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except DsWizardError as exc:
            click.echo(f"error: {exc.one_line()}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=WizardGroup, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ds-wizard")
@auto_options
@click.pass_context
def main(ctx: click.Context, auto: bool, **auto_params: Any) -> None:
    """Get DeepSpeed batch sizes right, then train Mamba models.

    Run with no arguments to open the wizard (a terminal UI).

    \b
    Headless examples:
      ds-wizard --auto --num-gpus 4 --preset 7b_mamba --dry-run
      ds-wizard check deepspeed_config.json --num-gpus 4
      ds-wizard fix deepspeed_config.json --num-gpus 4
      ds-wizard generate --preset 7b_mamba --gpus 1,2,4,8
    """
    check_auto_usage(ctx, {"auto": auto, **auto_params})
    if auto:
        run_auto(**auto_params)
    elif ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


from ds_wizard.commands.presets import presets  # noqa: E402

main.add_command(presets)

from ds_wizard.commands.check import check  # noqa: E402
from ds_wizard.commands.fix import fix  # noqa: E402
from ds_wizard.commands.generate import generate  # noqa: E402
from ds_wizard.commands.gpus import gpus  # noqa: E402

for _command in (check, fix, generate, gpus):
    main.add_command(_command)

from ds_wizard.commands.plan import plan  # noqa: E402

main.add_command(plan)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
