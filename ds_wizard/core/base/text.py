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


# what a JSON or TOML document must not carry raw: C0 and C1 controls, DEL, the bidi
# controls and the line/paragraph separators (U+2028/9 end a line in some viewers)
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
                          r"\u2028\u2029]")


_NOT_C0 = re.compile(r"[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def escape_unprintable(text: str, *, keep_c0: bool = False) -> str:
    """``text`` with every character of :data:`_UNPRINTABLE` written as ``\\uXXXX``: the
    escape both JSON and TOML basic strings read back as the same character.
    ``keep_c0``: for a serialised document whose writer already escaped C0 inside its
    strings, and whose own line breaks must stay."""
    return (_NOT_C0 if keep_c0 else _UNPRINTABLE).sub(
        lambda m: f"\\u{ord(m.group()):04x}", text)


def json_text(data: object, *, indent: int | None = 2, **kwargs: object) -> str:
    """The one JSON printer: ``json.dumps`` with every control, C1 and bidi character
    escaped (``\\u009b``, ``\\u202e``), so a value from a file cannot reach the terminal
    raw; other non-ASCII text (names, ``×``) stays readable. Parses back to ``data``."""
    import json

    # json.dumps already escapes C0 (and the layout's own line breaks must stay); the rest
    # can only occur inside strings, where \\uXXXX means the same character
    text = json.dumps(data, indent=indent, ensure_ascii=False, **kwargs)  # type: ignore[arg-type]
    return escape_unprintable(text, keep_c0=True)


# The CSI sequences ds-wizard's own output uses on a terminal (rich's colours and styles,
# cursor movement and erase for live displays, cursor show/hide): everything else that
# a terminal would act on (OSC: title, clipboard, hyperlinks; DCS; device reports that
# answer into the input; window operations) is removed from every write.
_ALLOWED_CSI = re.compile(r"\x1b\[[0-9;?]*[mABCDEFGHJKhlsu]")
_ANY_ESCAPE_OR_CONTROL = re.compile(
    _ESCAPES.pattern + r"| [\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e"
    r"\u2066-\u2069]", re.VERBOSE)


def terminal_safe(text: str, *, tty: bool) -> str:
    """What reaches standard output or error, as the last step of every write.

    Not a terminal: no escape sequence or control character at all (tabs and line breaks
    kept), so a captured output holds no escape byte. A terminal: rich's own styling and
    cursor sequences are kept, every other escape and control character is removed.
    """
    if tty:
        return _ANY_ESCAPE_OR_CONTROL.sub(
            lambda m: m.group() if _ALLOWED_CSI.fullmatch(m.group())
            or m.group() == "\r" else "", text)
    return _ANY_ESCAPE_OR_CONTROL.sub("", text)
