"""The shipped DeepSpeed schema must be what the installed DeepSpeed's models say.

``ds_wizard/core/check/data/deepspeed_schema.json`` is derived from DeepSpeed's pydantic config
models by ``ds_wizard.dsschema_gen``. This test derives it again from the installed
DeepSpeed and fails on any difference (a new key, a changed type or default, a removed
key, a validator added or edited), naming what drifted. To accept a new DeepSpeed:
``.venv/bin/python -m ds_wizard.dsschema_gen``, review the diff, and mirror any new
validator in ``ds_wizard.core.check.dsschema.VALIDATORS``.
"""

from __future__ import annotations

import json

import pytest

from ds_wizard.core.check import dsschema

pytest.importorskip("deepspeed")


@pytest.fixture(scope="module")
def derived():
    from ds_wizard.dsschema_gen import derive

    return derive()


def test_shipped_schema_matches_the_installed_deepspeed(derived):
    from ds_wizard.dsschema_gen import render

    shipped = dsschema.load_schema()
    drift = []
    for name in sorted({*shipped["models"], *derived["models"]}):
        old, new = shipped["models"].get(name), derived["models"].get(name)
        if old != new:
            keys = sorted({*(old or {}).get("fields", {}), *(new or {}).get("fields", {})})
            changed = [k for k in keys if (old or {}).get("fields", {}).get(k)
                       != (new or {}).get("fields", {}).get(k)]
            drift.append(f"model {name}: fields {changed or '-'}, validators "
                         f"{(old or {}).get('validators')} -> {(new or {}).get('validators')}")
    for key in ("deepspeed_version", "blocks", "plain_blocks", "removed_top_level_keys",
                "removed_zero_keys"):
        if shipped[key] != derived[key]:
            drift.append(f"{key}: {json.dumps(shipped[key])[:200]} -> "
                         f"{json.dumps(derived[key])[:200]}")
    assert not drift, "DeepSpeed's config models drifted from the shipped schema " \
        "(regenerate: python -m ds_wizard.dsschema_gen):\n" + "\n".join(drift)
    # byte-for-byte too: the file is exactly what the generator writes
    assert dsschema.SCHEMA_FILE.read_text(encoding="utf-8") == render(derived)


def test_every_validator_deepspeed_has_is_mirrored(derived):
    names = {f"{model}.{v}" for model, spec in derived["models"].items()
             for v in spec["validators"]}
    assert names <= set(dsschema.VALIDATORS), sorted(names - set(dsschema.VALIDATORS))


def test_drift_is_detected(derived, monkeypatch):
    """The comparison is not vacuous: a schema missing one key reads as drift."""
    tampered = json.loads(json.dumps(dsschema.load_schema()))
    del tampered["models"]["DeepSpeedZeroConfig"]["fields"]["overlap_comm"]
    assert tampered["models"] != derived["models"]
