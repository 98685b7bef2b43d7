"""Minimal textual edits of a JSON/hjson config: change top-level values in place.

``fix`` must leave every line it does not change exactly as it was (comments, trailing
commas, indentation, key order), so a reviewer's diff shows only the changed values. This
scanner finds each top-level member's value span in the text, skipping strings and
``//``, ``#`` and ``/* */`` comments, and splices new values in. Missing keys are inserted
as new lines before an existing member, copying its indentation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

_OPEN = "{["
_CLOSE = "}]"


@dataclass(frozen=True)
class Member:
    key: str
    key_start: int
    value_start: int
    value_end: int  # exclusive


class TextEditError(ValueError):
    """The text has a shape this editor does not handle (the caller rewrites the file)."""


def _skip_ws(text: str, i: int) -> int:
    while i < len(text):
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
        elif text.startswith("//", i) or ch == "#":
            nl = text.find("\n", i)
            i = len(text) if nl < 0 else nl + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise TextEditError("unterminated /* comment")
            i = end + 2
        else:
            break
    return i


def _string_end(text: str, i: int) -> int:
    quote = text[i]
    if text.startswith(quote * 3, i):  # hjson multi-line string
        end = text.find(quote * 3, i + 3)
        if end < 0:
            raise TextEditError("unterminated ''' string")
        return end + 3
    i += 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == quote:
            return i + 1
        i += 1
    raise TextEditError("unterminated string")


def _value_end(text: str, i: int) -> int:
    """End of the value starting at ``i`` (exclusive, trailing blanks excluded)."""
    ch = text[i]
    if ch in "\"'":
        return _string_end(text, i)
    if ch in _OPEN:
        depth = 0
        while i < len(text):
            i = _skip_ws(text, i)
            ch = text[i]
            if ch in "\"'":
                i = _string_end(text, i)
                continue
            if ch in _OPEN:
                depth += 1
            elif ch in _CLOSE:
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        raise TextEditError("unbalanced brackets")
    # a number, true/false/null, or an hjson quoteless string: up to , } newline or comment
    end = i
    while end < len(text) and text[end] not in ",}\n\r" and not text.startswith("//", end) \
            and not text.startswith("/*", end) and text[end] != "#":
        end += 1
    while end > i and text[end - 1] in " \t":
        end -= 1
    return end


def top_level_members(text: str) -> tuple[list[Member], int]:
    """The members of the top-level object, and the index of its ``{``."""
    i = _skip_ws(text, 0)
    if i >= len(text) or text[i] != "{":
        raise TextEditError("the top level is not an object in braces")
    brace = i
    i += 1
    members = []
    while True:
        i = _skip_ws(text, i)
        if i >= len(text):
            raise TextEditError("unbalanced braces")
        if text[i] == "}":
            return members, brace
        if text[i] == ",":
            i += 1
            continue
        key_start = i
        if text[i] in "\"'":
            end = _string_end(text, i)
            key = json.loads(text[i:end]) if text[i] == '"' else text[i + 1:end - 1]
        else:
            end = text.find(":", i)
            if end < 0:
                raise TextEditError("a key without a colon")
            key = text[i:end].strip()
        i = _skip_ws(text, end)
        if i >= len(text) or text[i] != ":":
            raise TextEditError(f"no colon after key {key!r}")
        i = _skip_ws(text, i + 1)
        value_end = _value_end(text, i)
        members.append(Member(key, key_start, i, value_end))
        i = value_end


def set_top_level(text: str, new_values: dict[str, Any], order: list[str]) -> str:
    """``text`` with the top-level keys in ``new_values`` set to those values (JSON).

    Present keys have only their value replaced. Missing ones go on new lines, before the
    first present key of ``order`` (or the first member), with its indentation.
    """
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    text = text[len(bom):]
    members, _ = top_level_members(text)
    by_key = {m.key: m for m in members}
    edits: list[tuple[int, int, str]] = []
    for key, value in new_values.items():
        if key in by_key:
            m = by_key[key]
            edits.append((m.value_start, m.value_end, json.dumps(value)))
    missing = [k for k in new_values if k not in by_key]
    if missing:
        anchor = next((by_key[k] for k in order if k in by_key), members[0] if members else None)
        if anchor is None:
            raise TextEditError("an empty object")
        line_start = text.rfind("\n", 0, anchor.key_start) + 1
        indent = text[line_start:anchor.key_start]
        if indent.strip():  # the anchor shares its line with something else
            raise TextEditError("members on one line")
        newline = "\r\n" if text[:line_start].endswith("\r\n") else "\n"
        block = "".join(f"{json.dumps(k)}: {json.dumps(new_values[k])},{newline}{indent}"
                        for k in missing)
        edits.append((anchor.key_start, anchor.key_start, block))
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return bom + text
