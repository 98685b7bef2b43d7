"""``ds-wizard generate``: the seed table, and files DeepSpeed's parser accepts."""

from __future__ import annotations

import json

import pytest
from _ds_oracle import deepspeed_verdict

from ds_wizard.cli import main
from ds_wizard.core.config.auto import auto_configure
from ds_wizard.core.presets.lookup import builtin_dir, load_preset

# Copied from the source document (../shared/seed/deepspeed-batch-size-quick-fix.md).
SEED_TABLE = """\
| GPUs | micro_batch | grad_acc | train_batch_size | config file |
|------|-------------|----------|------------------|-------------|
| 1    | 2           | 16       | 32               | deepspeed_1gpu.json |
| 2    | 2           | 16       | 64               | deepspeed_2gpu.json |
| 4    | 4           | 8        | 128              | deepspeed_4gpu.json |
| 8    | 4           | 4        | 128              | deepspeed_8gpu.json |"""

PRESETS = sorted(p.stem for p in builtin_dir().glob("*.toml"))


def test_7b_mamba_reproduces_the_seed_table_and_files_parse(runner, tmp_path):
    result = runner.invoke(main, ["generate", "--preset", "7b_mamba", "--gpus", "1,2,4,8",
                                  "--out-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert SEED_TABLE in result.output
    for n in (1, 2, 4, 8):
        cfg = json.loads((tmp_path / f"deepspeed_{n}gpu.json").read_text())
        verdict = deepspeed_verdict(cfg, n)
        assert verdict.valid, verdict


def test_generate_is_stable_and_backs_up_changed_files(runner, tmp_path):
    args = ["generate", "--gpus", "4", "--out-dir", str(tmp_path)]
    assert runner.invoke(main, args).exit_code == 0
    first = (tmp_path / "deepspeed_4gpu.json").read_bytes()
    assert runner.invoke(main, args).exit_code == 0
    assert (tmp_path / "deepspeed_4gpu.json").read_bytes() == first
    assert not (tmp_path / "deepspeed_4gpu.json.bak").exists()
    changed = runner.invoke(main, [*args, "--zero-stage", "3"])
    assert changed.exit_code == 0
    assert (tmp_path / "deepspeed_4gpu.json.bak").read_bytes() == first


def test_generate_json_and_bad_counts(runner, tmp_path):
    result = runner.invoke(main, ["generate", "--gpus", "2,8", "--out-dir", str(tmp_path),
                                  "--json"])
    rows = json.loads(result.stdout)
    assert [r["gpus"] for r in rows] == [2, 8]
    assert runner.invoke(main, ["generate", "--gpus", "2,x"]).exit_code == 2
    assert runner.invoke(main, ["generate", "--gpus", "0"]).exit_code == 2
    # an output directory that does not exist yet is created, as users expect
    missing = runner.invoke(main, ["generate", "--gpus", "2", "--out-dir",
                                   str(tmp_path / "new" / "configs")])
    assert missing.exit_code == 0, missing.output
    assert (tmp_path / "new" / "configs" / "deepspeed_2gpu.json").is_file()
    assert f"created   {tmp_path / 'new' / 'configs'}/ (it did not exist)" in missing.output
    # a path that is a file is no directory: refused, nothing replaced
    (tmp_path / "file").write_text("keep")
    taken = runner.invoke(main, ["generate", "--gpus", "2", "--out-dir", str(tmp_path / "file")])
    assert taken.exit_code in (1, 2) and taken.stderr.startswith("error: ")
    assert (tmp_path / "file").read_text() == "keep"


@pytest.mark.parametrize("name", PRESETS)
def test_every_shipped_preset_builds_configs_deepspeed_parses(name):
    preset = load_preset(name)
    for n in (1, 2, 4, 8):
        cfg = auto_configure(preset, n).config
        verdict = deepspeed_verdict(cfg, n)
        assert verdict.valid, (name, n, verdict)
