"""Errors the user can act on. Each carries one line: what is wrong, and how to fix it."""

from __future__ import annotations


class DsWizardError(Exception):
    """A problem with the user's input or environment, reported as one line (exit 1)."""

    exit_code = 1

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
