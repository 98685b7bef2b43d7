"""Command line: ``ds-wizard`` opens the TUI; ``ds-wizard --auto`` and the subcommands are
the headless path. Commands are thin: they parse flags, call ``ds_wizard.core`` and print.

Exit codes: 0 OK, 1 the config is invalid or a problem was found, 2 usage error.
"""

from __future__ import annotations

import sys

import click

from ds_wizard import __version__
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
@click.pass_context
def main(ctx: click.Context) -> None:
    """Get DeepSpeed batch sizes right, then train Mamba models.

    Run with no arguments to open the wizard (a terminal UI).
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
