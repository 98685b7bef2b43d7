"""Text from files made safe for a terminal.

A preset's description, a file name or a key quoted in an error can carry escape sequences:
an OSC that retitles the window or writes the clipboard, colours, erase-line, a bare ``\\r``
that hides what came before. Everything that came from a file goes through
:func:`sanitize` before the CLI prints it or the TUI shows it.
"""

from __future__ import annotations

import re

# ESC-introduced sequences: CSI (ESC [ … final byte), OSC/DCS/PM/APC/SOS strings up to
# BEL or ST, and two-character escapes; plus their 8-bit C1 forms (CSI = U+009B, OSC = U+009D)
_ESCAPES = re.compile(
    r"""
    (?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?             # CSI
    | (?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])     # OSC, DCS, SOS, PM, APC ...
      [^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?       # ... up to BEL or ST (or the end)
    | \x1b[ -/]*[0-~]?                            # any other escape
    """,
    re.VERBOSE,
)
# C0 and C1 controls and DEL; Unicode bidi overrides/isolates, which reorder what is shown
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_WHITESPACE = re.compile(r"[\t\n\r\v\f]")


def sanitize(text: object, *, keep_newlines: bool = False) -> str:
    """``text`` without escape sequences or control characters, safe to print.

    Tabs and line breaks become spaces (one line stays one line), unless ``keep_newlines``,
    which keeps ``\\n`` for multi-line text such as a file shown as it is.
    """
    out = _ESCAPES.sub("", str(text))
    if keep_newlines:
        lines = out.split("\n")
        return "\n".join(_CONTROLS.sub("", _WHITESPACE.sub(" ", line)) for line in lines)
    return _CONTROLS.sub("", _WHITESPACE.sub(" ", out))
