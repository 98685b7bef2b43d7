"""core.config.filecheck and core.config.repair: what `check` and `fix` decide, as result
objects whose JSON and text are read from the same fields."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from fakes import SEED_CONFIG, write_seed

from ds_wizard.core.base.errors import ConfigFileError, DsWizardError
from ds_wizard.core.batch.world import WorldSize
from ds_wizard.core.config.filecheck import check_file
from ds_wizard.core.config.repair import repair_file
from ds_wizard.core.presets.lookup import load_preset

FOUR = WorldSize(4, 4, "--num-gpus 4", "--num-gpus 4")


def _accepts(cfg: dict, world: int) -> SimpleNamespace:
    """A stand-in for DeepSpeed's parser that records what it was given and accepts it."""
    seen.append((cfg, world))
    return SimpleNamespace(accepted=True, error_type=None, message=None,
                           line=lambda: "DeepSpeed accepts it", to_dict=lambda: {"ok": True})


seen: list = []


def test_check_the_seed_text_and_json_agree(tmp_path: Path) -> None:
    done = check_file(write_seed(tmp_path), FOUR)
    assert not done.valid
    lines, data = done.lines(), done.as_dict()
    assert lines[0].startswith("❌ INVALID: ") and "world size 4 (--num-gpus 4)" in lines[0]
    assert data["valid"] is False and data["total_ranks"] == 4
    assert data["fix_commands"] == done.fix_commands()
    assert [f"  {c}" for c in data["fix_commands"]] == lines[-len(data["fix_commands"]):]
    assert any("# 128 = 4 × 8 × 4" in c for c in data["fix_commands"])


def test_check_with_a_preset_estimates_memory_and_deep_has_the_last_word(tmp_path) -> None:
    cfg = write_seed(tmp_path)
    cfg.write_text(json.dumps({**SEED_CONFIG, "train_batch_size": 128}))
    seen.clear()
    done = check_file(cfg, FOUR, spec=load_preset("7b_mamba").spec, gpu_memory="80GiB",
                      deep=_accepts)
    assert done.valid and done.memory is not None and done.memory["gpu_memory"] == 80 * 2**30
    assert seen and seen[0][1] == 4
    assert done.lines()[-1] == "  deep check: DeepSpeed accepts it"
    assert done.as_dict()["deep"] == {"ok": True}


def test_check_an_unreadable_file_is_a_config_file_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError):
        check_file(tmp_path / "missing.json", FOUR)


def test_repair_the_seed_writes_a_backup_and_says_what_changed(tmp_path: Path) -> None:
    cfg = write_seed(tmp_path)
    done = repair_file(cfg, FOUR, deep=_accepts)
    assert done.valid and done.new_values == {"train_batch_size": 128}
    assert done.written == cfg and done.backup == cfg.with_name(cfg.name + ".bak")
    assert json.loads(cfg.read_text())["train_batch_size"] == 128
    data, text = done.as_dict(), "\n".join(done.lines())
    assert data["changes"] == {"train_batch_size": [16, 128]}
    assert "train_batch_size                16 → 128" in text
    assert f"wrote {cfg} (previous version: {done.backup})" in text
    again = repair_file(cfg, FOUR, deep=_accepts)
    assert again.written is None and again.lines()[0].startswith("✅ nothing to fix")


def test_repair_dry_run_writes_nothing_and_keep_global_resplits(tmp_path: Path) -> None:
    cfg = write_seed(tmp_path)
    cfg.write_text(json.dumps({**SEED_CONFIG, "train_batch_size": 128}))
    before = cfg.read_bytes()
    done = repair_file(cfg, WorldSize(8, 8, "--num-gpus 8", "--num-gpus 8"), keep="global",
                       dry_run=True, deep=None)
    assert cfg.read_bytes() == before and done.written is None
    assert done.lines()[-1] == f"dry run: {cfg} not written"
    assert done.as_dict()["deep"] is None and "backup" not in done.as_dict()


def test_repair_leaves_other_problems_to_check(tmp_path: Path) -> None:
    cfg = write_seed(tmp_path)
    cfg.write_text(json.dumps({**SEED_CONFIG, "zero_optimization": {"stage": 9}}))
    done = repair_file(cfg, FOUR, dry_run=True, deep=_accepts)
    assert not done.valid and done.problems and "deep" not in done.as_dict()
    assert any(line.startswith("✗ ") and "problem(s) remain" in line for line in done.lines())


def test_repair_refuses_a_sequence_parallel_size_that_does_not_divide(tmp_path) -> None:
    cfg = write_seed(tmp_path)
    cfg.write_text(json.dumps({**SEED_CONFIG, "sequence_parallel_size": 3}))
    with pytest.raises(DsWizardError, match="does not divide the world size 4"):
        repair_file(cfg, FOUR)
