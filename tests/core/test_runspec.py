"""The run contract: run.json and metrics records, each written and read by one function,
and a rank that never imports the launch package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ds_wizard
from ds_wizard.core.runs import rundir
from ds_wizard.core.runs.metrics import read_metrics
from ds_wizard.core.runs.runspec import (
    MetricsRecord,
    RunInfo,
    RunSpec,
    metrics_line,
    read_run_info,
    spec_from_config,
    write_run_info,
)

SPEC = RunSpec(preset="tiny_mamba", world_size=2, accelerator="cpu", micro_batch=4,
               grad_accum=2, global_batch=16, zero_stage=2, precision="fp32",
               backend="auto", steps=7, seed=3, data="/d/x.txt")


def test_run_info_round_trips(tmp_path: Path) -> None:
    info = RunInfo(SPEC, created="2026-01-01T00:00:00", ds_wizard_version="0.1.0", cwd="/w")
    write_run_info(tmp_path / "run.json", info)
    assert read_run_info(tmp_path / "run.json") == info
    flat = rundir.load_run_json(tmp_path)
    assert flat["preset"] == "tiny_mamba" and flat["world_size"] == 2  # keys stay flat


def test_incomplete_run_json_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text('{"preset": "x"}', encoding="utf-8")
    with pytest.raises(rundir.RunError, match="complete run description"):
        read_run_info(tmp_path / "run.json")


def test_spec_is_read_off_the_config() -> None:
    cfg = {"train_batch_size": 32, "train_micro_batch_size_per_gpu": 2,
           "gradient_accumulation_steps": 4, "zero_optimization": {"stage": 3},
           "bf16": {"enabled": True}}
    spec = spec_from_config(cfg, preset="p", world_size=4, accelerator="cuda",
                            backend="auto", steps=1)
    assert (spec.global_batch, spec.micro_batch, spec.grad_accum, spec.zero_stage,
            spec.precision) == (32, 2, 4, 3, "bf16")
    with pytest.raises(AttributeError):
        spec.world_size = 8  # type: ignore[misc]  # immutable


def test_metrics_record_round_trips(tmp_path: Path) -> None:
    rec = MetricsRecord(step=5, loss=2.5, lr=1e-3, grad_norm=None, tokens_per_s=10.0,
                        samples_per_s=1.0, elapsed_s=3.0, tokens=500, epoch=0)
    path = tmp_path / "metrics.jsonl"
    path.write_text(metrics_line(rec) + "not json\n", encoding="utf-8")
    (got,) = read_metrics(path)
    assert got == rec.to_dict() and "mfu" not in got  # CPU records carry no GPU keys
    assert MetricsRecord(**got) == rec


def test_train_never_imports_the_launch_package() -> None:
    train = Path(ds_wizard.__file__).parent / "train"
    for py in train.glob("*.py"):
        for node in ast.walk(ast.parse(py.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith("ds_wizard.launch"), f"{py.name} imports {name}"
                assert name.startswith(("ds_wizard.core", "ds_wizard.train")) or \
                    not name.startswith("ds_wizard"), f"{py.name} imports {name}"


def test_run_json_from_before_the_contract_still_reads(tmp_path: Path) -> None:
    """Runs made by the previous version can still be resumed."""
    import json

    old = {"created": "x", "ds_wizard_version": "0.1.0", "preset": "tiny_mamba",
           "config_source": None, "world_size": 2, "accelerator": "cpu", "steps": 7,
           "data": None, "data_dtype": None, "tokenizer": None, "backend": "auto", "cwd": "/"}
    (tmp_path / "run.json").write_text(json.dumps(old), encoding="utf-8")
    (tmp_path / "ds_config.json").write_text(json.dumps(
        {"train_batch_size": 16, "train_micro_batch_size_per_gpu": 4,
         "gradient_accumulation_steps": 2, "zero_optimization": {"stage": 2}}),
        encoding="utf-8")
    spec = read_run_info(tmp_path / "run.json").spec
    assert (spec.preset, spec.world_size, spec.global_batch, spec.zero_stage,
            spec.precision) == ("tiny_mamba", 2, 16, 2, "fp32")
