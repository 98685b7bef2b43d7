"""Command line: ``ds-wizard`` opens the TUI; ``ds-wizard --auto`` and the subcommands are
the headless path. Commands are thin: they parse flags, call ``ds_wizard.core`` and print.

Exit codes (``ExitCode`` in core/base/errors.py): 0 OK, 1 the input is invalid, a problem was
found, an input could not be read or an output written (standard output included), 2 usage
error, 128+N stopped by signal N.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from ds_wizard import __version__
from ds_wizard.commands.auto import auto_options, check_auto_usage, run_auto
from ds_wizard.core.base.errors import DsWizardError, ExitCode
from ds_wizard.outputs import OutputClosed, StreamGuard, report


class WizardGroup(click.Group):
    """Every failure below it ends as one ``error: …`` line on stderr and its ``ExitCode``:
    DsWizardError, click's usage errors, a full or closed standard output, and input that
    nests too deeply for Python to parse.

    Subcommands can be registered lazily (``add_lazy_command``): their module is imported
    only when that command runs or help lists it, so ``ds-wizard --auto`` does not pay
    for every other command's imports at start-up.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy: dict[str, str] = {}

    def add_lazy_command(self, name: str, target: str) -> None:
        """Register ``module:attribute`` under ``name`` without importing it yet."""
        self._lazy[name] = target

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self._lazy.pop(cmd_name, None)
        if target is not None:
            module, attribute = target.split(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except DsWizardError as exc:
            report(exc.one_line())
            ctx.exit(exc.exit_code)

    def main(self, args: Any = None, prog_name: str | None = None,  # type: ignore[override]
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        with StreamGuard() as guard:
            code = self._run(guard, args, prog_name, complete_var, **extra)
        sys.exit(int(code))

    def _run(self, guard: StreamGuard, args: Any, prog_name: str | None,
             complete_var: str | None, **extra: Any) -> int:
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else ExitCode.OK
        except click.exceptions.Exit as exc:  # --help, --version (click <8.2 raises it)
            code = exc.exit_code
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "ds-wizard"
            report(f"{exc.format_message()} (see '{where} --help')")
            return ExitCode.USAGE
        except click.ClickException as exc:
            report(exc.format_message())
            return exc.exit_code
        except click.Abort:
            report("aborted")
            return ExitCode.PROBLEM
        except DsWizardError as exc:  # raised outside invoke (a callback while parsing)
            report(exc.one_line())
            return exc.exit_code
        except RecursionError:
            report("the input nests too deeply to read (is this the right file or value?)")
            return ExitCode.PROBLEM
        except KeyboardInterrupt:
            report("interrupted")
            return ExitCode.SIGNAL_BASE + 2
        try:  # what is still buffered, while a failure can still be reported
            guard.flush()
        except OutputClosed as exc:
            report(exc.one_line())
            return exc.exit_code
        return code


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
      ds-wizard explain train.log
      ds-wizard generate --preset 7b_mamba --gpus 1,2,4,8
    """
    check_auto_usage(ctx, {"auto": auto, **auto_params})
    if auto:
        run_auto(**auto_params)
    elif ctx.invoked_subcommand is None:
        from ds_wizard.app import run  # textual loads only when the wizard opens

        run()


# Lazily registered (see WizardGroup): "name": "module:attribute".
for _name, _target in {
    "presets": "ds_wizard.commands.presets:presets",
    "check": "ds_wizard.commands.check:check",
    "fix": "ds_wizard.commands.fix:fix",
    "explain": "ds_wizard.commands.explain:explain",
    "generate": "ds_wizard.commands.generate:generate",
    "gpus": "ds_wizard.commands.gpus:gpus",
    "plan": "ds_wizard.commands.plan:plan",
    "launch": "ds_wizard.commands.launch:launch",
    "runs": "ds_wizard.commands.runs:runs_cmd",
    "attach": "ds_wizard.commands.runs:attach",
    "stop": "ds_wizard.commands.runs:stop",
    "checkpoint": "ds_wizard.commands.checkpoint:checkpoint",
    "tune": "ds_wizard.commands.tune:tune",
    "doctor": "ds_wizard.commands.doctor:doctor",
}.items():
    main.add_lazy_command(_name, _target)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
