"""The one table of numeric limits, and the one way to read a number a user typed.

Every entry point (CLI options, ``--set`` values, preset files through the schema, the
TUI's fields) reads numbers through :func:`parse_int` / :func:`parse_float` and checks them
against the limits here, so ``--gpus 1e30``, ``--global-batch 10^12``, a batch written as
``"²"`` or a 5000-digit string fail the same way everywhere: one line, no traceback, and
never minutes of arithmetic on an absurd number.

The limits are far above any real job and far below what would make the batch solver or
the memory model slow: a number past them is a typo (an extra digit, a token count pasted
into a sample count), not a plan.
"""

from __future__ import annotations

import math
import re

from ds_wizard.core.base.errors import DsWizardError

#: GPUs (ranks) in one job, and each model-parallel degree (tp, pp, sp)
MAX_WORLD_SIZE = 1 << 16
#: samples per optimizer step (DeepSpeed's train_batch_size); the checker's MAX_BATCH_VALUE
MAX_GLOBAL_BATCH = 1 << 24
#: samples per GPU per forward (train_micro_batch_size_per_gpu)
MAX_MICRO_BATCH = 1 << 16
#: gradient accumulation steps
MAX_GRAD_ACCUM = 1 << 24
#: training steps of one run
MAX_STEPS = 100_000_000
#: characters of one number as text: no limit above needs more, and int() of a long
#: digit string is quadratic (Python refuses past 4300 digits with a ValueError)
MAX_NUMBER_CHARS = 40
#: characters of one ``--set`` value, and how deeply its arrays/tables may nest
MAX_VALUE_CHARS = 4096
MAX_VALUE_DEPTH = 8

# ASCII only: str.isdigit() and int() accept "²", "٣" and "1_000", which nobody means
_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)


class LimitError(DsWizardError):
    """A number that is not a number, not finite, or outside its limit."""


def _shown(text: object) -> str:
    shown = repr(text) if isinstance(text, str) else str(text)
    return shown if len(shown) <= 24 else shown[:21] + "..."


def check_int(value: int, what: str, *, low: int = 1, high: int) -> int:
    """``value`` if ``low <= value <= high``, else a LimitError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise LimitError(f"{what} {_shown(value)} is not a whole number",
                         f"write a whole number from {low:,} to {high:,}")
    if value < low:
        raise LimitError(f"{what} {value} is below {low:,}",
                         f"write a whole number from {low:,} to {high:,}")
    if value > high:
        raise LimitError(f"{what} {_shown(value)} is over the limit of {high:,}",
                         "is there an extra digit? see docs/safety-and-limits.md")
    return value


def parse_int(text: str | int, what: str, *, low: int = 1, high: int) -> int:
    """A whole number written in ASCII decimal digits, within ``[low, high]``.

    Refuses ``"²"``, ``"1e30"``, ``"10^12"``, ``"0x10"``, ``"1_000"``, ``"nan"`` and digit
    strings longer than :data:`MAX_NUMBER_CHARS`, each with a one-line LimitError.
    """
    if isinstance(text, int):
        return check_int(text, what, low=low, high=high)
    raw = str(text).strip()
    if len(raw) > MAX_NUMBER_CHARS:
        raise LimitError(f"{what} is {len(raw):,} characters long, not a plausible number",
                         f"write a whole number from {low:,} to {high:,}")
    if not _INT.fullmatch(raw):
        raise LimitError(f"{what} {_shown(raw)} is not a whole number",
                         f"write it in digits 0-9, from {low:,} to {high:,}")
    return check_int(int(raw), what, low=low, high=high)


def check_float(value: float, what: str, *, low: float, high: float,
                low_open: bool = False) -> float:
    """A finite float within ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LimitError(f"{what} {_shown(value)} is not a number", "write a number such as 0.9")
    if not math.isfinite(value):
        raise LimitError(f"{what} is {value}, not a finite number",
                         "NaN and Infinity are never valid here; write a number")
    below = value <= low if low_open else value < low
    if below or value > high:
        bracket = "(" if low_open else "["
        raise LimitError(f"{what} {value:g} is outside {bracket}{low:g}, {high:g}]",
                         f"write a number in {bracket}{low:g}, {high:g}]")
    return float(value)


def parse_float(text: str | float, what: str, *, low: float, high: float,
                low_open: bool = False) -> float:
    """A finite decimal number (``0.9``, ``3e-4``) within the bounds; never NaN or Infinity."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return check_float(text, what, low=low, high=high, low_open=low_open)
    raw = str(text).strip()
    if len(raw) > MAX_NUMBER_CHARS or not _FLOAT.fullmatch(raw):
        raise LimitError(f"{what} {_shown(raw)} is not a number",
                         "write a finite decimal number such as 0.9 or 3e-4")
    return check_float(float(raw), what, low=low, high=high, low_open=low_open)


def check_bracket_depth(raw: str, what: str, limit: int = MAX_VALUE_DEPTH) -> str:
    """Refuse text whose ``[``/``{`` nesting exceeds ``limit`` before any parser recurses.

    Counting brackets (outside no context) over-estimates only for brackets inside quoted
    strings, which a batch or learning-rate value never has.
    """
    if len(raw) > MAX_VALUE_CHARS:
        raise LimitError(f"{what} is {len(raw):,} characters long",
                         f"a value is at most {MAX_VALUE_CHARS:,} characters")
    depth = deepest = 0
    for ch in raw:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    if deepest > limit:
        raise LimitError(f"{what} nests {deepest} levels deep",
                         f"a value nests at most {limit} levels of [ ] or {{ }}")
    return raw


# TOML (presets, --set values) reads 0x10, 0o10, 0b10 and 1_000 as integers; ds-wizard's
# numbers are decimal digits only, the same on the command line, in presets and configs
_NOT_DECIMAL = re.compile(r"(?<![\w.])[+-]?(?:0[xXoObB][0-9A-Fa-f_]*|[0-9]+(?:_[0-9]+)+"
                          r"(?:\.[0-9_]+)?(?:[eE][+-]?[0-9_]+)?)(?![\w.])", re.ASCII)
_DIGIT_RUN = re.compile(rf"[0-9]{{{MAX_NUMBER_CHARS + 1},}}", re.ASCII)
_QUOTED = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'')


def check_number_spellings(raw: str, what: str) -> str:
    """Refuse, in TOML text outside its quoted strings, a number written in hex, octal or
    binary, with ``_`` separators, or with more than :data:`MAX_NUMBER_CHARS` digits: the
    parser would accept each, and the limits say no. Returns ``raw``."""
    outside = _QUOTED.sub('""', raw)
    found = _NOT_DECIMAL.search(outside)
    if found:
        raise LimitError(f"{what}: {_shown(found.group())} is not a decimal number",
                         "write numbers in digits 0-9 (no 0x, 0o, 0b or _ separators)")
    if _DIGIT_RUN.search(outside):
        raise LimitError(f"{what}: a number has more than {MAX_NUMBER_CHARS} digits",
                         "no setting takes a number that long; is there a typo?")
    return raw
