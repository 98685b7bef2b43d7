"""The checker's list of top-level keys against what the installed DeepSpeed reads."""

from __future__ import annotations

import re
from pathlib import Path

import deepspeed  # a hard dependency: a broken install must fail here, not skip
import pytest
from _ds_oracle import FakeMpu

from ds_wizard.core.check.checker import KNOWN_TOP_LEVEL_KEYS, REMOVED_TOP_LEVEL_KEYS
from ds_wizard.core.config.auto import auto_configure
from ds_wizard.core.presets.lookup import load_preset


class RecordingDict(dict):
    """A dict that remembers every key looked up, however DeepSpeed looks."""

    seen: set

    def __getitem__(self, key):
        self.seen.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.seen.add(key)
        return super().get(key, default)

    def __contains__(self, key):
        self.seen.add(key)
        return super().__contains__(key)

    def keys(self):
        outer = self

        class Keys:
            def __contains__(self, key):
                outer.seen.add(key)
                return dict.__contains__(outer, key)

            def __iter__(self):
                return iter(dict.keys(outer))

            def __len__(self):
                return len(dict.keys(outer))

        return Keys()


def keys_deepspeed_reads() -> set[str]:
    """Top-level keys DeepSpeedConfig looks up, for a minimal and for a full config."""
    from unittest import mock

    import deepspeed.comm as dist
    from deepspeed.runtime.config import DeepSpeedConfig

    full = auto_configure(load_preset("7b_mamba"), 4).config
    seen: set[str] = set()
    for cfg in ({"train_batch_size": 8}, full):
        rec = RecordingDict(cfg)
        rec.seen = seen  # copy.copy inside DeepSpeed keeps this shared set
        with mock.patch.object(dist, "get_rank", return_value=0):
            DeepSpeedConfig(rec, mpu=FakeMpu(4 if cfg is full else 1))
    return seen


def deepspeed_string_literals() -> set[str]:
    root = Path(deepspeed.__file__).parent
    found: set[str] = set()
    for path in root.rglob("*.py"):
        found.update(re.findall(r"""["']([a-z][a-z0-9_]*)["']""", path.read_text(errors="ignore")))
    return found


def test_every_key_deepspeed_reads_is_known():
    read = keys_deepspeed_reads()
    # the recording itself works: the keys every DeepSpeed config parse looks up are there
    assert {"train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
            "zero_optimization", "bf16", "fp16", "optimizer", "scheduler"} <= read, sorted(read)
    missing = read - KNOWN_TOP_LEVEL_KEYS - REMOVED_TOP_LEVEL_KEYS
    assert not missing, f"DeepSpeed reads keys the checker would call unknown: {sorted(missing)}"


def test_every_known_key_exists_in_deepspeed():
    stale = KNOWN_TOP_LEVEL_KEYS - keys_deepspeed_reads() - deepspeed_string_literals()
    assert not stale, f"keys DeepSpeed no longer mentions anywhere: {sorted(stale)}"


def test_removed_keys_match_deepspeed():
    from deepspeed.runtime import config as ds_config

    removed = getattr(ds_config, "_REMOVED_TOP_LEVEL_CONFIG_KEYS", None)
    if removed is None:
        pytest.skip("this DeepSpeed has no list of removed keys")
    assert set(removed) == REMOVED_TOP_LEVEL_KEYS
    assert not REMOVED_TOP_LEVEL_KEYS & KNOWN_TOP_LEVEL_KEYS
