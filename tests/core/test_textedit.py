"""core.textedit: only the changed values move; everything else stays byte-for-byte."""

from __future__ import annotations

import json

import hjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds_wizard.core.check.textedit import TextEditError, set_top_level, top_level_members

ORDER = ["train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"]

TRICKY = """# header comment with "quotes" and {braces}
{
  "note": "a string with // not a comment, and a } brace",
  'single': 'quoted',
  quoteless_key: 3,
  "train_batch_size": 16 , // trailing comment, space before the comma
  /* "train_micro_batch_size_per_gpu": 99 is commented out */
  "train_micro_batch_size_per_gpu": 4,
  "zero_optimization": {"stage": 2, "train_batch_size": 7},
  "gradient_accumulation_steps": 8
}
"""


def test_values_change_in_place_and_nothing_else():
    out = set_top_level(TRICKY, {"train_batch_size": 128}, ORDER)
    assert out == TRICKY.replace('"train_batch_size": 16 ,', '"train_batch_size": 128 ,')
    data = hjson.loads(out)
    assert data["train_batch_size"] == 128 and data["zero_optimization"]["train_batch_size"] == 7


def test_last_member_without_comma():
    out = set_top_level(TRICKY, {"gradient_accumulation_steps": 2}, ORDER)
    assert out.endswith('"gradient_accumulation_steps": 2\n}\n')


def test_missing_key_is_one_new_line_with_the_neighbours_indent():
    text = '{\n    "train_batch_size": 96,  // c\n    "fp16": {"enabled": true}\n}\n'
    out = set_top_level(text, {"gradient_accumulation_steps": 3}, ORDER)
    assert out == ('{\n    "gradient_accumulation_steps": 3,\n    "train_batch_size": 96,  // c\n'
                   '    "fp16": {"enabled": true}\n}\n')
    assert json.loads(out.replace("  // c", ""))["gradient_accumulation_steps"] == 3


def test_members_are_found_past_strings_and_comments():
    members, _ = top_level_members(TRICKY)
    assert [m.key for m in members] == ["note", "single", "quoteless_key", "train_batch_size",
                                        "train_micro_batch_size_per_gpu", "zero_optimization",
                                        "gradient_accumulation_steps"]


@pytest.mark.parametrize("text", ["[1, 2]", '{"a": 1', '{"a" 1}', '{"a": "unterminated}'])
def test_shapes_it_cannot_edit_are_refused(text):
    with pytest.raises(TextEditError):
        set_top_level(text, {"train_batch_size": 1}, ORDER)


keys = st.sampled_from([*ORDER, "steps_per_print", "zero_optimization", "bf16"])
values = st.one_of(st.integers(-5, 10**6), st.text(max_size=5),
                   st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=150, deadline=None)
@given(cfg=st.dictionaries(keys, values, min_size=1),
       new=st.dictionaries(st.sampled_from(ORDER), st.integers(1, 10**6), min_size=1),
       indent=st.sampled_from([None, 2, 4]))
def test_any_json_layout_parses_to_the_intended_values(cfg, new, indent):
    text = json.dumps(cfg, indent=indent)
    try:
        out = set_top_level(text, new, ORDER)
    except TextEditError:
        assert indent is None  # only a one-line object with a missing key is refused
        return
    assert json.loads(out) == {**cfg, **new}


def test_crlf_and_bom_survive():
    text = '\ufeff{\r\n  "train_batch_size": 16,\r\n  "bf16": {"enabled": true}\r\n}\r\n'
    out = set_top_level(text, {"train_batch_size": 32, "gradient_accumulation_steps": 2}, ORDER)
    assert out == ('\ufeff{\r\n  "gradient_accumulation_steps": 2,\r\n  "train_batch_size": 32,'
                   '\r\n  "bf16": {"enabled": true}\r\n}\r\n')
