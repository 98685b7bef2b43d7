"""core.config.generate: the configs `ds-wizard generate` writes, as one Generated result;
its JSON rows and its table are read from the same object."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ds_wizard.core.base.errors import DsWizardError, WriteError
from ds_wizard.core.base.fsio import ensure_dir
from ds_wizard.core.batch.topology import resolve_topology
from ds_wizard.core.config.generate import generate_configs
from ds_wizard.core.presets.lookup import load_preset

SEVEN_B = load_preset("7b_mamba")
# the source document's table (../shared/seed/deepspeed-batch-size-quick-fix.md)
SEED_ROWS = [(1, 2, 16, 32), (2, 2, 16, 64), (4, 4, 8, 128), (8, 4, 4, 128)]


def _generate(out: Path, counts=(1, 2, 4, 8), **kw):
    return generate_configs(SEVEN_B, [resolve_topology(num_gpus=n) for n in counts], out, **kw)


def test_the_seed_table_rows_files_and_json_agree(tmp_path: Path) -> None:
    done = _generate(tmp_path / "configs")
    assert done.created_dir and done.change_lines()[0].startswith("created   ")
    assert [(c.gpus, c.micro_batch, c.grad_accum, c.train_batch_size)
            for c in done.configs] == SEED_ROWS
    table = done.markdown_table()
    assert table[2] == "| 1    | 2           | 16       | 32               | deepspeed_1gpu.json |"
    for row, config in zip(done.as_list(), done.configs, strict=True):
        written = json.loads(Path(row["file"]).read_text())
        assert written["train_batch_size"] == row["train_batch_size"] == config.train_batch_size
        assert row["changed"] is True and row["backup"] is None
    assert done.change_lines()[-1] == "wrote 4 of 4 file(s)"


def test_a_second_run_changes_nothing_and_a_new_stage_keeps_a_backup(tmp_path: Path) -> None:
    _generate(tmp_path, (4,))
    again = _generate(tmp_path, (4,))
    assert not again.created_dir and again.change_lines() == [
        f"unchanged {tmp_path / 'deepspeed_4gpu.json'} (already holds this config)",
        "wrote 0 of 1 file(s), 1 already up to date"]
    changed = _generate(tmp_path, (4,), zero_stage=3)
    assert changed.configs[0].change.backup == tmp_path / "deepspeed_4gpu.json.bak"


def test_nothing_is_created_when_a_config_cannot_be_built(tmp_path: Path) -> None:
    with pytest.raises(DsWizardError, match="ZeRO stage must be 0, 1, 2 or 3"):
        _generate(tmp_path / "out", (1, 2), zero_stage=5)
    assert not (tmp_path / "out").exists()


def test_ensure_dir_refuses_what_is_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("keep")
    with pytest.raises(WriteError, match="file: it is a file"):
        ensure_dir(tmp_path / "file")
    with pytest.raises(WriteError, match="not a directory"):
        ensure_dir(tmp_path / "file" / "below")
    assert ensure_dir(tmp_path / "a" / "b") and not ensure_dir(tmp_path / "a" / "b")
