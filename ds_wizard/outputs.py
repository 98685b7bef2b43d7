"""The CLI's standard output and error: a full or closed stream is one error line, not a
traceback, and the one ``error:`` line every failure ends in. Every write to either passes
:func:`ds_wizard.core.base.text.terminal_safe`, so no escape sequence that came from a file,
a name or a log reaches the terminal, whichever command printed it.

``ds-wizard presets list > /dev/full`` (ENOSPC) or ``| head -1`` (EPIPE once head has
exited) makes the next write fail. :class:`StreamGuard` turns that into
:class:`OutputClosed`, which the CLI reports like any other error (exit 1), and points the
dead stream at ``/dev/null`` so the interpreter's final flush cannot fail again.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
from types import TracebackType
from typing import Any, TextIO

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.base.text import sanitize, terminal_safe


class OutputClosed(DsWizardError):
    """Standard output (or error) cannot be written."""


_HINTS = {
    errno.EPIPE: "the program reading the output stopped early (e.g. head); "
                 "nothing is wrong with the input",
    errno.ENOSPC: "the disk or device it goes to is full",
}


class _Guarded:
    """A text stream whose write errors become :class:`OutputClosed`.

    Once broken it stays broken: every later write raises again without touching the
    stream, so an error swallowed somewhere (click probes streams with empty writes)
    cannot let the command carry on and exit 0.
    """

    def __init__(self, stream: TextIO, label: str) -> None:
        self._stream = stream
        self._label = label
        self._error: OutputClosed | None = None
        try:
            self._tty = bool(stream.isatty())
        except (AttributeError, ValueError, OSError):
            self._tty = False

    @property
    def broken(self) -> bool:
        return self._error is not None

    def write(self, text: str) -> int:
        """Write ``text`` with what a terminal would act on removed (the one printer's last
        step: :func:`terminal_safe`); returns ``len(text)`` as callers expect."""
        self._check()
        try:
            self._stream.write(terminal_safe(text, tty=self._tty))
            return len(text)
        except OSError as exc:
            raise self._fail(exc) from exc

    def flush(self) -> None:
        self._check()
        try:
            self._stream.flush()
        except OSError as exc:
            raise self._fail(exc) from exc

    def _check(self) -> None:
        if self._error is not None:
            raise OutputClosed(self._error.message, self._error.hint)

    def _fail(self, exc: OSError) -> OutputClosed:
        self._error = OutputClosed(
            f"cannot write to {self._label}: {exc.strerror or exc}",
            _HINTS.get(exc.errno or 0, "check where the output goes"),
        )
        _silence(self._stream)
        return self._error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _silence(stream: TextIO) -> None:
    """Point the stream's descriptor at /dev/null, so its unflushed buffer drains there."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError, io.UnsupportedOperation):
        return  # an in-memory stream (tests): nothing is flushed at exit
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)


class StreamGuard:
    """Guards ``sys.stdout`` and ``sys.stderr`` for the duration of one CLI run."""

    def __enter__(self) -> StreamGuard:
        self._saved = (sys.stdout, sys.stderr)
        self.stdout = _Guarded(sys.stdout, "standard output") if sys.stdout else None
        self.stderr = _Guarded(sys.stderr, "standard error") if sys.stderr else None
        if self.stdout is not None:
            sys.stdout = self.stdout  # type: ignore[assignment]
        if self.stderr is not None:
            sys.stderr = self.stderr  # type: ignore[assignment]
        return self

    def flush(self) -> None:
        """Flush standard output now, while a failure can still be reported (once)."""
        if self.stdout is not None and not self.stdout.broken:
            self.stdout.flush()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        sys.stdout, sys.stderr = self._saved


def report(message: str) -> None:
    """The one ``error: …`` line, sanitized, on standard error (if it can be written)."""
    line = "error: " + sanitize(message)
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, OutputClosed):
        # stderr itself is gone: the exit status is all that is left to say it
        if sys.__stderr__ is not None:
            _silence(sys.__stderr__)
