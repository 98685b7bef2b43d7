"""The validation cache (ds_wizard/core/presets/spec_cache.py): a preset that passed once is
rebuilt without pydantic, and nothing about the cache can change a verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds_wizard.core.presets import spec_cache
from ds_wizard.core.presets.lookup import PresetValidationError, builtin_dir, parse_preset
from ds_wizard.core.presets.schema import Bounds, PresetSpec
from ds_wizard.core.presets.validation import validate_spec

GOOD = (
    "schema_version = 2\n"
    "[model]\nd_model = 64\nn_layer = 2\nvocab_size = 256\n"
    "[train]\nseq_len = 128\nlr = 3e-4\n"
    "[batch]\nglobal_batch = 8\nmicro_batch = 2\n"
    "[batch.by_world_size.2]\nglobal_batch = 8\nmicro_batch = 4\n"
)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(spec_cache.ENV_CACHE_DIR, str(tmp_path))
    monkeypatch.delenv(spec_cache.ENV_NO_CACHE, raising=False)
    return tmp_path / "validated"


def entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.json")) if cache.is_dir() else []


@pytest.mark.parametrize("path", sorted(builtin_dir().glob("*.toml")), ids=lambda p: p.stem)
def test_a_shipped_preset_comes_back_from_the_cache_unchanged(cache, path):
    text = path.read_text()
    fresh = parse_preset(text, str(path))
    assert len(entries(cache)) == 1
    cached = spec_cache.get(text, str(path))
    assert cached is not None
    assert cached == (fresh.spec, fresh.notices)
    assert parse_preset(text, str(path)) == fresh


def test_to_dict_and_back_is_the_identity_on_validated_specs(cache):
    spec = parse_preset(GOOD, "good.toml").spec
    assert PresetSpec.from_validated(json.loads(json.dumps(spec.to_dict()))) == spec
    assert spec.batch.for_world_size(2).micro_batch == 4


def test_notices_are_replayed_from_the_cache(cache):
    v1 = GOOD.replace("schema_version = 2", "schema_version = 1")
    first = parse_preset(v1, "old.toml")
    again = parse_preset(v1, "old.toml")
    assert first.notices and "migrated from schema_version 1" in first.notices[0]
    assert again.notices == first.notices


def test_an_edited_file_is_validated_again(cache):
    parse_preset(GOOD, "team.toml")
    broken = GOOD.replace("n_layer = 2", "n_layer = 0")
    with pytest.raises(PresetValidationError, match=r"model\.n_layer = 0"):
        parse_preset(broken, "team.toml")
    assert len(entries(cache)) == 1  # failures are never cached


def test_an_entry_from_other_code_is_not_served(cache, monkeypatch):
    parse_preset(GOOD, "a.toml")
    monkeypatch.setattr(spec_cache, "fingerprint", lambda: "a different schema")
    assert spec_cache.get(GOOD, "a.toml") is None


@pytest.mark.parametrize("damage", [
    "",                                   # truncated to nothing
    "{not json",
    "[]",
    json.dumps({"key": "wrong", "spec": {}, "notices": []}),
    "KEY_BUT_NO_SPEC",
    "KEY_BUT_SPEC_WRONG_SHAPE",
])
def test_a_damaged_entry_is_a_miss_not_an_error(cache, damage):
    spec = parse_preset(GOOD, "a.toml").spec
    (entry,) = entries(cache)
    key = entry.stem
    if damage == "KEY_BUT_NO_SPEC":
        damage = json.dumps({"key": key, "notices": []})
    elif damage == "KEY_BUT_SPEC_WRONG_SHAPE":
        damage = json.dumps({"key": key, "spec": {"model": 3}, "notices": []})
    entry.write_text(damage)
    assert spec_cache.get(GOOD, "a.toml") is None
    assert parse_preset(GOOD, "a.toml").spec == spec  # validated again, entry rewritten
    assert spec_cache.get(GOOD, "a.toml") is not None


def test_an_entry_that_breaks_a_cross_field_rule_is_not_trusted(cache):
    parse_preset(GOOD, "a.toml")
    (entry,) = entries(cache)
    data = json.loads(entry.read_text())
    data["spec"]["train"]["warmup_steps"] = data["spec"]["train"]["total_steps"] + 1
    entry.write_text(json.dumps(data))
    assert spec_cache.get(GOOD, "a.toml") is None


def test_an_unusable_cache_directory_changes_nothing(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(spec_cache.ENV_CACHE_DIR, str(blocker))
    spec = parse_preset(GOOD, "a.toml").spec
    assert spec.model.d_model == 64
    assert spec_cache.get(GOOD, "a.toml") is None


def test_the_cache_can_be_turned_off(cache, monkeypatch):
    monkeypatch.setenv(spec_cache.ENV_NO_CACHE, "1")
    parse_preset(GOOD, "a.toml")
    assert entries(cache) == []


def test_the_cache_stays_bounded(cache, monkeypatch):
    monkeypatch.setattr(spec_cache, "MAX_ENTRIES", 6)
    monkeypatch.setattr(spec_cache, "KEEP_AFTER_PRUNE", 3)
    for i in range(10):
        parse_preset(GOOD.replace("vocab_size = 256", f"vocab_size = {256 + i}"), "a.toml")
    assert 3 <= len(entries(cache)) <= 6


def test_bounds_refuse_a_type_they_cannot_limit():
    from dataclasses import dataclass
    from typing import Annotated

    from pydantic import TypeAdapter

    @dataclass
    class Odd:
        flag: Annotated[bool, Bounds(gt=0)]

    with pytest.raises(TypeError, match="Bounds does not apply"):
        TypeAdapter(Odd)


@settings(max_examples=60, deadline=None)
@given(
    d_model=st.integers(1, 4096), n_layer=st.integers(1, 64), micro=st.integers(1, 64),
    gas=st.integers(1, 64), lr=st.floats(1e-6, 1.0), zero=st.integers(0, 3),
    desc=st.text(max_size=40),
)
def test_any_valid_spec_survives_the_cache_round_trip(d_model, n_layer, micro, gas, lr,
                                                      zero, desc):
    spec = validate_spec({
        "description": desc,
        "model": {"d_model": d_model, "n_layer": n_layer},
        "train": {"lr": lr, "min_lr": 0.0},
        "batch": {"global_batch": micro * gas, "micro_batch": micro},
        "deepspeed": {"zero_stage": zero},
    })
    assert PresetSpec.from_validated(json.loads(json.dumps(spec.to_dict()))) == spec
