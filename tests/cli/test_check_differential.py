"""``check``'s verdict against DeepSpeed's own ``DeepSpeedConfig``, side by side.

The configs are generated from variations a user produces by hand: every key of every
pydantic-validated block (from the shipped schema), misspelt keys, wrong-case values,
``"auto"`` in every position, numbers written as strings, floats and booleans, the
``sequence_parallel_size`` key, comments and trailing commas, removed keys, and the batch
triplet at world sizes 1-64. The oracle is the real ``DeepSpeedConfig`` (one import, run
in-process); the assertion is that the two verdicts agree in every case.
"""

from __future__ import annotations

import copy
import json
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _ds_oracle import deepspeed_config_verdict

from ds_wizard.core.check.checker import check_config, parse_config_bytes
from ds_wizard.core.check.dsschema import load_schema

BASE = {"train_batch_size": 32, "train_micro_batch_size_per_gpu": 4,
        "gradient_accumulation_steps": 2}


@pytest.fixture(scope="module", autouse=True)
def _quiet_deepspeed():
    pytest.importorskip("deepspeed")
    logging.disable(logging.WARNING)  # DeepSpeed logs every deprecated key it meets
    yield
    logging.disable(logging.NOTSET)


def _samples(desc: dict[str, Any]) -> list[Any]:
    """Values to try for one field type: valid ones, near misses and other spellings."""
    kind = desc["kind"]
    if kind == "optional":
        return [None, *_samples(desc["of"])[:4]]
    if kind == "bool":
        return [True, False, "yes", "on", "1", "off", "True", 1, 0, 2, "maybe", None]
    if kind == "int":
        return [8, "8", 8.0, 8.5, True, -1, 0, "eight", None]
    if kind == "float":
        return [0.5, "0.5", 1, True, -1.0, "x", None]
    if kind == "str" or kind == "path":
        return ["name", 3, None]
    if kind == "enum":
        vals = desc["values"]
        first = vals[-1]
        out = [*vals, 9, None]
        if isinstance(first, str):
            out += [first.upper(), f" {first}"]
        else:
            out += [str(first), float(first), True]
        return out
    if kind == "literal":
        return [*desc["values"], "other"]
    if kind == "list":
        return [[], ["a"], "a", 3]
    if kind == "dict":
        return [{}, {"a": 1}, 3]
    if kind == "model":
        return [{}, {"no_such_key": 1}, 3, None]
    return [1]


def _misspell(key: str) -> str:
    return key[:-1] if len(key) > 3 else key + "x"


def _block_variations() -> Iterator[dict[str, Any]]:
    schema = load_schema()
    models = schema["models"]
    for block, model in schema["blocks"].items():
        if block == "(monitor)":
            for sub, field in models[model]["fields"].items():
                ref = field["type"]["ref"]
                yield from _model_variations(models, ref, [sub])
            continue
        path = block.split(".")
        yield from _model_variations(models, model, path)


def _model_variations(models: dict[str, Any], model: str, path: list[str],
                      depth: int = 0) -> Iterator[dict[str, Any]]:
    spec = models[model]
    for name, field in spec["fields"].items():
        key = field.get("alias", name)
        desc = field["type"]
        for value in [*_samples(desc), "auto", "AUTO"]:
            yield _nest(path, {key: value})
        yield _nest(path, {_misspell(key): True})
        yield _nest(path, {_misspell(key): "auto"})
        inner = desc["of"] if desc["kind"] == "optional" else desc
        if inner["kind"] == "model" and depth < 2:
            yield from _model_variations(models, inner["ref"], [*path, key], depth + 1)
    yield _nest(path, "auto")
    yield _nest(path, None)
    yield _nest(path, [])


def _nest(path: list[str], value: Any) -> dict[str, Any]:
    for key in reversed(path):
        value = {key: value}
    return value


def _top_level_variations() -> Iterator[dict[str, Any]]:
    for stage in (0, 1, 2, 3, 4, "3", 3.0, True, False, "auto", "three", None, -1):
        yield {"zero_optimization": {"stage": stage}}
    for legacy in (True, False):
        yield {"zero_optimization": legacy}
        yield {"zero_optimization": legacy, "allgather_size": 1000}
    for fp16, bf16 in (("yes", "on"), ("1", "true"), (True, "no"), ("off", 1), ("auto", True)):
        yield {"fp16": {"enabled": fp16}, "bf16": {"enabled": bf16}}
        yield {"fp16": {"enabled": fp16}, "bfloat16": {"enabled": bf16}}
    yield {"bf16": None, "bfloat16": {"enabled": True}, "fp16": {"enabled": True}}
    schema = load_schema()
    for key in schema["removed_top_level_keys"]:
        yield {key: {"enabled": False}}
    for key in schema["removed_zero_keys"]:
        yield {"zero_optimization": {"stage": 3, key: 1}}
    for key, values in {
        "communication_data_type": ["fp16", "BF16", "fp8", 3, None],
        "gradient_allreduce_op": ["mean", "SUM", "max", 1],
        "checkpoint": [{"tag_validation": "fail"}, {"tag_validation": "never"},
                       {"tag_validation": 1}, {"parallel_write": {"pipeline_stage": 1}},
                       {"parallel_write": {"pipeline_stage": "yes"}}, "auto"],
        "data_types": [{"keep_in_fp32_modules": "auto"}, {"keep_in_fp32_modules": ["norm"]},
                       {"keep_in_fp32_modules": "norm"}],
        "torch_autocast": [{"enabled": True, "dtype": "bf16"}, {"dtype": "bfloat"},
                           {"dtype": "torch.float16"}, "auto"],
        "flops_profiler": [{"enabled": True}, True, "auto"],
        "optimizer": [{"type": "AdamW", "params": {"lr": "auto"}}, "auto"],
        "scheduler": [{"type": "WarmupLR", "params": {"warmup_num_steps": "auto"}}],
        "gradient_clipping": ["auto", 1.0],
        "trainer_notes": [{"anything": 1}],
        "sequence_parallel_size": [1, 2, 4, "2", 0, "auto", 2.0, True],
    }.items():
        for value in values:
            yield {key: value}
    for op in ("sum", "mean"):
        yield {"gradient_allreduce_op": op, "zero_optimization": {"stage": 3}}
    yield {"fp16": {"enabled": True, "fp16_master_weights_and_grads": True}}
    yield {"fp16": {"enabled": True, "fp16_master_weights_and_grads": True},
           "zero_optimization": {"stage": 2}}
    yield {"bf16": {"enabled": True, "bf16_optimizer_states": True},
           "zero_optimization": {"stage": 1}}
    yield {"zero_optimization": {"stage": 2, "compute_grad_norm": False}}
    yield {"zero_optimization": {"stage": 3, "compute_grad_norm": False}}
    yield {"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu",
                                                                   "ratio": 0.5}}}
    yield {"zero_optimization": {"stage": 3, "cpu_offload": True,
                                 "offload_optimizer": {"device": "cpu"}}}
    yield {"fp16": {"enabled": True, "loss_scale": 0, "loss_scale_window": 0}}
    yield {"fp16": {"enabled": True, "loss_scale": 128, "loss_scale_window": 0}}
    yield {"fp16": {"enabled": True, "loss_scale": -1}}
    yield {"fp16": {"enabled": True, "min_loss_scale": True}}


BATCH_VALUES = [None, 8, 16, 32, 0, -4, "16", "auto", 16.0, 4.5, True]


def _batch_variations(rng: random.Random) -> Iterator[tuple[dict[str, Any], int]]:
    keys = ("train_batch_size", "train_micro_batch_size_per_gpu",
            "gradient_accumulation_steps")
    for train in BATCH_VALUES:
        for micro in BATCH_VALUES:
            for gas in (None, 1, 2, 3, "2", 2.0, 0):
                cfg = {k: v for k, v in zip(keys, (train, micro, gas), strict=True)
                       if v is not None}
                yield cfg, rng.randint(1, 64)
    for ws in range(1, 65):  # every world size on the plain integer cases
        for triple in ((256, 2, 18), (128, 4, None), (None, 4, 8), (64, None, 2),
                       (512, None, None)):
            cfg = {k: v for k, v in zip(keys, triple, strict=True) if v is not None}
            yield cfg, ws
            yield {**cfg, "sequence_parallel_size": 2}, ws


def _cases() -> list[tuple[str, dict[str, Any], int]]:
    rng = random.Random(13)
    cases = []
    for i, block in enumerate([*_block_variations(), *_top_level_variations()]):
        ws = rng.choice((1, 2, 4, 8, 16, 64))
        # a triplet DeepSpeed accepts at this size, so the block alone decides the verdict
        base = {**BASE, "train_batch_size": 4 * 2 * ws}
        cfg = {**copy.deepcopy(base), **block}
        cases.append((f"block{i}", cfg, ws))
    batch = list(_batch_variations(rng))
    for i, (cfg, ws) in enumerate(batch):
        cases.append((f"batch{i}", cfg, ws))
    # mixtures: a batch shape plus one to three block variations, at any world size 1-64,
    # so the order in which DeepSpeed meets the problems is exercised too
    blocks = [*_block_variations(), *_top_level_variations()]
    for i in range(500):
        cfg = copy.deepcopy(rng.choice(batch)[0])
        for block in rng.sample(blocks, rng.randint(1, 3)):
            _merge(cfg, copy.deepcopy(block))
        cases.append((f"mix{i}", cfg, rng.randint(1, 64)))
    return cases


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


CASES = _cases()


def _disagreements(cases: list[tuple[str, dict[str, Any], int]]) -> list[str]:
    out = []
    for name, cfg, ws in cases:
        oracle = deepspeed_config_verdict(cfg, ws)
        report = check_config(cfg, ws)
        theirs = "accepts" if oracle.valid else f"{oracle.error_type}: {oracle.message}"
        ours = report.deepspeed_error or ""
        if oracle.valid != report.valid:
            out.append(f"{name} ws={ws} {json.dumps(cfg)}: DeepSpeed {theirs}"
                       f"; check {'valid' if report.valid else report.errors[:2]}")
        elif not oracle.valid and ours.partition(":")[0] != oracle.error_type:
            # the exception named must be the one DeepSpeed raises first
            out.append(f"{name} ws={ws} {json.dumps(cfg)}: DeepSpeed {theirs}; check names "
                       f"{ours}")
        elif not oracle.valid and oracle.error_type in ("AssertionError", "TypeError",
                                                        "ZeroDivisionError") \
                and "Check batch" in (oracle.message or "") and ours != theirs:
            out.append(f"{name} ws={ws}: DeepSpeed says {theirs!r}, check quotes {ours!r}")
    return out


def test_generated_configs_agree_with_deepspeed():
    assert len(CASES) > 1500
    bad = _disagreements(CASES)
    assert not bad, f"{len(bad)} of {len(CASES)} disagree:\n" + "\n".join(bad[:40])


def test_both_verdicts_occur():
    # a generator that produced only valid (or only invalid) configs would prove little
    sample = CASES[::25]
    verdicts = {check_config(cfg, ws).valid for _, cfg, ws in sample}
    assert verdicts == {True, False}


COMMENTED = """// a DeepSpeed config as people keep them: comments and trailing commas
{
  "train_batch_size": 64,   // global batch
  "train_micro_batch_size_per_gpu": 4,
  /* block comment */
  "zero_optimization": {
    "stage": 2,
    "overlap_comm": true,
  },
  %s
}
"""


@pytest.mark.parametrize("extra", ['"sequence_parallel_size": 2,', '"fp16": {"enabled": "yes"},',
                                   '"zero_optimization_x": 1,', '"bf16": {"enabled": true,},'])
@pytest.mark.parametrize("ws", [1, 2, 4, 16, 64])
def test_comments_and_trailing_commas_read_as_deepspeed_reads_them(tmp_path: Path, extra: str,
                                                                    ws: int):
    path = tmp_path / "ds.json"
    path.write_text(COMMENTED % extra)
    oracle = deepspeed_config_verdict(str(path), ws)
    cfg = parse_config_bytes(path.read_bytes(), str(path))
    assert check_config(cfg, ws).valid == oracle.valid, oracle


def test_check_json_on_files_agrees_too(tmp_path: Path):
    """The same comparison through the command line, ``check FILE --json``, on a sample
    of the cases written out as files (every fourth with a comment and trailing commas)."""
    from click.testing import CliRunner

    from ds_wizard.cli import main

    runner = CliRunner()
    bad = []
    for i, (name, cfg, ws) in enumerate(CASES[::30]):
        path = tmp_path / f"{i}.json"
        text = json.dumps(cfg, indent=2)
        if i % 4 == 0 and cfg:
            text = "// generated\n" + text[:-2] + ",\n}\n"  # trailing comma before the brace
        path.write_text(text)
        result = runner.invoke(main, ["check", str(path), "--num-gpus", str(ws), "--json"])
        data = json.loads(result.stdout)
        oracle = deepspeed_config_verdict(str(path), ws)
        if data["valid"] != oracle.valid or result.exit_code != (0 if oracle.valid else 1):
            bad.append(f"{name} ws={ws}: DeepSpeed {oracle}; check --json {data['errors'][:1]}")
    assert not bad, "\n".join(bad)
