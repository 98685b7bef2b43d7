"""A corpus of configs in the shapes public projects use, checked against DeepSpeed.

``tests/data/ds_corpus/`` holds configs written for this test in the shapes seen in public
training repositories: HF-style ``"auto"`` ZeRO-2/3, CPU and NVMe offload, fp16 loss-scale
blocks, curriculum learning, the flops profiler, monitor blocks, Ulysses sequence
parallelism, the usual batch mistakes, and files with comments and trailing commas. Each
is checked at 1, 2, 3, 4 and 8 GPUs against DeepSpeed's own ``DeepSpeedConfig`` (reading
the file itself, with hjson); then every fixable batch failure is repaired by ``fix`` and
the result must be accepted by DeepSpeed.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path

import pytest
from _ds_oracle import deepspeed_config_verdict
from click.testing import CliRunner

from ds_wizard.cli import main
from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.check.checker import check_config, fix_config, load_config_file

CORPUS = sorted((Path(__file__).parents[1] / "data" / "ds_corpus").glob("*.json"))
WORLD_SIZES = (1, 2, 3, 4, 8)


@pytest.fixture(scope="module", autouse=True)
def _quiet_deepspeed():
    pytest.importorskip("deepspeed")
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


def test_the_corpus_is_big_enough():
    assert len(CORPUS) >= 40


def test_check_agrees_with_deepspeed_on_every_corpus_config():
    bad = []
    verdicts = set()
    for path in CORPUS:
        cfg = load_config_file(path)
        for ws in WORLD_SIZES:
            oracle = deepspeed_config_verdict(str(path), ws)
            ours = check_config(cfg, ws)
            verdicts.add(ours.valid)
            if oracle.valid != ours.valid:
                bad.append(f"{path.name} @ {ws}: DeepSpeed "
                           f"{'accepts' if oracle.valid else oracle.error_type}; check "
                           f"{'valid' if ours.valid else ours.errors[:1]}")
    assert verdicts == {True, False}
    assert not bad, "\n".join(bad)


def _fixable(cfg: dict, ws: int) -> dict | None:
    """The repaired config when the file's only failure is the batch, else None."""
    if check_config(cfg, ws).valid:
        return None
    for keep in ("micro", "global"):
        try:
            new, _, _ = fix_config(cfg, ws, keep=keep)
        except DsWizardError:
            continue
        if check_config(new, ws).valid:
            return new
    return None


def test_fix_makes_every_fixable_batch_failure_acceptable_to_deepspeed(tmp_path):
    runner = CliRunner()
    fixed = 0
    for path in CORPUS:
        cfg = load_config_file(path)
        for ws in WORLD_SIZES:
            if _fixable(cfg, ws) is None:
                continue
            work = tmp_path / f"{ws}_{path.name}"
            shutil.copyfile(path, work)
            result = runner.invoke(main, ["fix", str(work), "--num-gpus", str(ws)])
            if result.exit_code != 0:
                result = runner.invoke(main, ["fix", str(work), "--num-gpus", str(ws),
                                              "--keep", "global"])
            assert result.exit_code == 0, (path.name, ws, result.output)
            assert deepspeed_config_verdict(str(work), ws).valid, (path.name, ws)
            fixed += 1
    assert fixed >= 20  # the corpus does exercise the repair


def _git_diff(before: Path, after: Path) -> list[str]:
    proc = subprocess.run(["git", "diff", "--no-index", "-U0", "--no-color", str(before),
                           str(after)], capture_output=True, text=True, check=False)
    return [line for line in proc.stdout.splitlines()
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
@pytest.mark.parametrize(("name", "ws"), [("commented_zero2.json", 3),
                                          ("commented_missing_gas.json", 5),
                                          ("commented_sp.json", 6)])
def test_fix_keeps_comments_and_diff_shows_only_changed_values(tmp_path, name, ws):
    source = Path(__file__).parents[1] / "data" / "ds_corpus" / name
    work = tmp_path / name
    shutil.copyfile(source, work)
    result = CliRunner().invoke(main, ["fix", str(work), "--num-gpus", str(ws)])
    assert result.exit_code == 0, result.output
    diff = _git_diff(source, work)
    removed = [line for line in diff if line.startswith("-")]
    added = [line for line in diff if line.startswith("+")]
    # only batch lines change: each removed line comes back with just its number changed,
    # and a missing key is one added line
    batch_keys = ("train_batch_size", "train_micro_batch_size_per_gpu",
                  "gradient_accumulation_steps")
    assert diff and all(any(k in line for k in batch_keys) for line in diff), diff
    assert len(removed) <= len(added) <= len(removed) + 1
    for line in removed:
        key = next(k for k in batch_keys if k in line)
        partner = next(a for a in added if key in a)
        before_comment = line.partition("//")[2]
        assert partner.partition("//")[2] == before_comment  # trailing comment kept
    text = work.read_text()
    for comment_line in (ln for ln in source.read_text().splitlines() if "//" in ln or "#" in ln
                         or "/*" in ln):
        if not any(k in comment_line for k in batch_keys):
            assert comment_line in text
    assert deepspeed_config_verdict(str(work), ws).valid
    assert (tmp_path / f"{name}.bak").read_bytes() == source.read_bytes()


def test_fix_follows_the_hf_trainer(tmp_path):
    """--hf: "auto" stays where the Trainer fills it; hard-coded values that disagree with
    TrainingArguments become the Trainer's numbers."""
    work = tmp_path / "hf.json"
    shutil.copyfile(Path(__file__).parents[1] / "data" / "ds_corpus" /
                    "hf_zero3_hardcoded_micro.json", work)
    result = CliRunner().invoke(main, ["fix", str(work), "--num-gpus", "4", "--hf",
                                       "per_device_train_batch_size=4,"
                                       "gradient_accumulation_steps=2", "--json"])
    data = json.loads(result.stdout)
    assert result.exit_code == 0, result.output
    assert data["changes"] == {"train_micro_batch_size_per_gpu": [2, 4]}
    assert any('gradient_accumulation_steps stays "auto"' in n for n in data["notes"])
    written = json.loads(work.read_text())
    assert written["gradient_accumulation_steps"] == "auto"
    assert written["train_batch_size"] == "auto"
