"""core.limits (the one reading of a typed number) and core.text.sanitize, directly."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds_wizard.core.base.limits import (
    MAX_GLOBAL_BATCH,
    MAX_MICRO_BATCH,
    LimitError,
    check_bracket_depth,
    parse_float,
    parse_int,
)
from ds_wizard.core.base.text import sanitize
from ds_wizard.core.check import checker
from ds_wizard.core.presets import schema


@pytest.mark.parametrize("text", ["²", "٣", "1e30", "10^12", "0x10", "1_000", "nan", "",
                                  "1.0", "9" * 5000, " 4 2 "])
def test_parse_int_refuses_what_is_not_plain_digits(text):
    with pytest.raises(LimitError) as info:
        parse_int(text, "--gpus", high=64)
    assert "\n" not in info.value.one_line()


@pytest.mark.parametrize(("text", "value"), [("8", 8), (" 16 ", 16), ("+2", 2), (4, 4)])
def test_parse_int_reads_plain_numbers(text, value):
    assert parse_int(text, "n", high=64) == value


def test_parse_int_applies_both_bounds():
    with pytest.raises(LimitError, match="over the limit of 64"):
        parse_int("65", "n", high=64)
    with pytest.raises(LimitError, match="below 1"):
        parse_int("0", "n", high=64)
    with pytest.raises(LimitError, match="not a whole number"):
        parse_int(True, "n", high=64)


@pytest.mark.parametrize("text", ["nan", "inf", "-Infinity", "1e999", "0x1p3", "½", float("nan"),
                                  math.inf])
def test_parse_float_refuses_non_finite_and_odd_numbers(text):
    with pytest.raises(LimitError):
        parse_float(text, "--headroom", low=0, high=1, low_open=True)


def test_parse_float_open_lower_bound():
    assert parse_float("1", "h", low=0, high=1, low_open=True) == 1.0
    with pytest.raises(LimitError, match=r"outside \(0, 1\]"):
        parse_float("0", "h", low=0, high=1, low_open=True)


def test_nesting_is_refused_before_any_parser_recurses():
    with pytest.raises(LimitError, match="nests 2000 levels"):
        check_bracket_depth("[" * 2000 + "]" * 2000, "--set x")
    with pytest.raises(LimitError, match="10,000 characters long"):
        check_bracket_depth("[" * 5000 + "]" * 5000, "--set x")
    assert check_bracket_depth("[[1, 2], [3]]", "--set x") == "[[1, 2], [3]]"


def test_one_definition_of_the_batch_limits():
    """The schema's bounds and the checker's plausibility limit are the limits module's."""
    bounds = {f.name: f.type.__metadata__[0] for f in schema.dataclasses.fields(schema.BatchSpec)
              if f.name != "by_world_size"}
    assert bounds["global_batch"].le == MAX_GLOBAL_BATCH
    assert bounds["micro_batch"].le == MAX_MICRO_BATCH
    assert checker.MAX_BATCH_VALUE == MAX_GLOBAL_BATCH


@pytest.mark.parametrize(("raw", "clean"), [
    ("\x1b]0;pwned\x07title", "title"),
    ("\x1b]52;c;aGk=\x1b\\clip", "clip"),
    ("\x1b[31mred\x1b[0m", "red"),
    ("\x1b[2Kerase\rover", "erase over"),
    ("\x9b31mc1\x9d0;x\x9cend", "c1end"),
    ("right\u202eleft", "rightleft"),
    ("tab\there\nline", "tab here line"),
    ("café ✅ 7b_mamba", "café ✅ 7b_mamba"),
])
def test_sanitize(raw, clean):
    assert sanitize(raw) == clean


def test_sanitize_keeps_newlines_when_asked():
    assert sanitize("a\x1b[1m\nb\r\n", keep_newlines=True) == "a\nb \n"


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_sanitize_never_leaves_a_control_character(text):
    out = sanitize(text)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in out)
