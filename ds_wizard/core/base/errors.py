"""Errors the user can act on. Each carries one line: what is wrong, and how to fix it."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Every exit status ds-wizard uses; the README documents this table."""

    OK = 0
    #: the input is invalid, a check found a problem, a plan does not fit, or an input could
    #: not be read or an output written
    PROBLEM = 1
    #: the command line itself is wrong: click's usage errors, and an option value that is
    #: not a number or is outside its limit (core/base/limits.py)
    USAGE = 2
    #: a run stopped by a signal exits 128 + the signal's number (130 for Ctrl-C);
    #: a training run that failed exits with its rank's own code
    SIGNAL_BASE = 128


class DsWizardError(Exception):
    """A problem with the user's input or environment, reported as one line (exit 1)."""

    exit_code: int = ExitCode.PROBLEM

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigFileError(DsWizardError):
    """A DeepSpeed JSON file that cannot be read or parsed."""


class PresetError(DsWizardError):
    """A preset that cannot be found, parsed or validated."""


class WriteError(DsWizardError):
    """An output that cannot be written."""
