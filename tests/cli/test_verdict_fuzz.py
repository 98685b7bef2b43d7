"""Issue 23, "no wrong valid": a differential fuzz of mutated realistic configs against
DeepSpeed's own ``DeepSpeedConfig``.

Seeds are the real-world configs of tests/data/ds_corpus. Each case mutates one to three
places of a seed: a value replaced by another type (a string where a bool is read, a huge
integer where a name is read, ``null``, a list, an object, deep nesting), a key removed,
misspelt, or added from the shipped schema. The product's verdict is the one ``check``
gives: the file is read (``parse_config_bytes``), the fast verdict runs, and for values it
does not mirror DeepSpeed's own verdict settles it (``deepcheck.settle``). The assertion:
no config ``check`` calls valid is refused by DeepSpeed.

The fast lane runs 5,000 cases with a fixed seed; ``@pytest.mark.slow`` runs 40,000.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import time
from pathlib import Path
from typing import Any

import pytest
from _ds_oracle import deepspeed_config_verdict

from ds_wizard.core.base.errors import ConfigFileError
from ds_wizard.core.check.checker import check_config, parse_config_bytes
from ds_wizard.core.check.dsschema import load_schema

CORPUS = Path(__file__).resolve().parents[1] / "data" / "ds_corpus"
ODD_VALUES: list[Any] = [
    "yes", "no", "true", "false", "on", "1", "0", "", "auto", "AUTO", "AdamW", "cpu", "none",
    True, False, 1, 0, -1, 2, 3, 7, 1.5, -0.5, 1e-3, 1 << 40, 1 << 64, -(1 << 63),
    None, [], [1], ["a"], {}, {"enabled": True}, {"type": "AdamW"}, {"stage": 2},
]


@pytest.fixture(scope="module", autouse=True)
def _quiet_deepspeed():
    pytest.importorskip("deepspeed")
    logging.disable(logging.WARNING)  # DeepSpeed logs every deprecated key it meets
    yield
    logging.disable(logging.NOTSET)


def seeds() -> list[dict[str, Any]]:
    import hjson

    out = []
    for f in sorted(CORPUS.glob("*.json")):
        try:
            data = hjson.loads(f.read_text(encoding="utf-8"))
        except (ValueError, hjson.HjsonDecodeError):
            continue
        if isinstance(data, dict):
            out.append(json.loads(json.dumps(data)))  # plain dicts and lists
    assert len(out) >= 20
    return out


def _places(cfg: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = []
    if isinstance(cfg, dict):
        for k, v in cfg.items():
            out.append((*path, k))
            out += _places(v, (*path, k))
    elif isinstance(cfg, list):
        for i, v in enumerate(cfg[:4]):
            out.append((*path, i))
            out += _places(v, (*path, i))
    return out


def _parent(cfg: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        cfg = cfg[key]
    return cfg


def _nested(rng: random.Random) -> Any:
    depth = rng.choice([8, 33, 40, 70, 200, 600])
    value: Any = rng.choice([1, "x", True])
    for _ in range(depth):
        value = [value] if rng.random() < 0.5 else {"k": value}
    return value


def mutate(cfg: dict[str, Any], rng: random.Random, keys: list[tuple[str, ...]]) -> None:
    places = _places(cfg)
    kind = rng.random()
    if places and kind < 0.55:
        path = rng.choice(places)
        value = _nested(rng) if rng.random() < 0.04 else copy.deepcopy(rng.choice(ODD_VALUES))
        _parent(cfg, path)[path[-1]] = value
    elif places and kind < 0.65:
        path = rng.choice(places)
        parent = _parent(cfg, path)
        if isinstance(parent, dict):
            del parent[path[-1]]
    elif places and kind < 0.72:
        path = rng.choice(places)
        parent = _parent(cfg, path)
        if isinstance(parent, dict) and isinstance(path[-1], str) and len(path[-1]) > 3:
            parent[path[-1][:-1]] = parent.pop(path[-1])
    else:
        # a key of the schema, anywhere it lives, with an odd value
        where = rng.choice(keys)
        node: Any = cfg
        for part in where[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[where[-1]] = copy.deepcopy(rng.choice(ODD_VALUES))


def schema_keys() -> list[tuple[str, ...]]:
    schema = load_schema()
    models = schema["models"]
    keys: list[tuple[str, ...]] = []
    for block, model in schema["blocks"].items():
        if block.startswith("("):
            continue
        for name, field in models[model]["fields"].items():
            keys.append((*block.split("."), field.get("alias", name)))
    keys += [(k,) for k in ("wall_clock_breakdown", "memory_breakdown", "dump_state",
                            "steps_per_print", "gradient_clipping", "prescale_gradients",
                            "gradient_predivide_factor", "communication_data_type",
                            "sequence_parallel_size", "train_batch_size",
                            "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                            "zero_allow_untested_optimizer", "gradient_allreduce_op")]
    keys += [("optimizer", "type"), ("optimizer", "params"), ("scheduler", "type"),
             ("scheduler", "params")]
    return keys


def product_verdict(cfg: dict[str, Any], world_size: int) -> tuple[bool, str]:
    """What ``check`` says: (valid, how it decided)."""
    from ds_wizard.deepcheck import settle

    try:
        data = parse_config_bytes(json.dumps(cfg).encode(), "fuzz.json")
    except ConfigFileError as exc:
        return False, f"refused at read: {exc.one_line()}"
    except RecursionError:
        return False, "json.dumps recursion"
    report = check_config(data, world_size)
    deep = settle(report, data, world_size)
    return report.valid, "deep" if deep is not None else "fast"


def fuzz(count: int, seed: int) -> tuple[list[str], dict[str, int]]:
    rng = random.Random(seed)
    bases, keys = seeds(), schema_keys()
    wrong_valid: list[str] = []
    tally = {"cases": 0, "valid": 0, "deep": 0, "wrong_invalid": 0}
    for i in range(count):
        cfg = copy.deepcopy(rng.choice(bases))
        for _ in range(rng.randint(1, 3)):
            mutate(cfg, rng, keys)
        ws = rng.choice([1, 1, 2, 4, 8, 16, 3, 64])
        ours, how = product_verdict(cfg, ws)
        try:
            theirs = deepspeed_config_verdict(copy.deepcopy(cfg), ws)
        except RecursionError:  # the oracle's own copy of a 600-deep value
            theirs = None
        tally["cases"] += 1
        tally["valid"] += ours
        tally["deep"] += how == "deep"
        ds_valid = theirs is not None and theirs.valid
        if ours and not ds_valid:
            shown = json.dumps(cfg)[:400]
            wrong_valid.append(f"case {i} ws={ws} ({how}): {shown} -> DeepSpeed "
                               f"{theirs.error_type if theirs else 'RecursionError'}: "
                               f"{(theirs.message or '')[:160] if theirs else ''}")
        elif ds_valid and not ours:
            tally["wrong_invalid"] += 1
    return wrong_valid, tally


def test_no_wrong_valid_in_5000_mutated_configs(capsys: pytest.CaptureFixture[str]) -> None:
    start = time.perf_counter()
    wrong, tally = fuzz(5000, seed=23)
    seconds = time.perf_counter() - start
    with capsys.disabled():
        print(f"\nverdict fuzz: {tally} in {seconds:.1f} s")
    assert tally["cases"] == 5000
    assert 0.05 < tally["valid"] / tally["cases"] < 0.95  # both verdicts occur
    assert not wrong, f"{len(wrong)} wrong 'valid':\n" + "\n".join(wrong[:20])


@pytest.mark.slow
def test_no_wrong_valid_in_40000_mutated_configs() -> None:
    wrong, _tally = fuzz(40_000, seed=2023)
    assert not wrong, f"{len(wrong)} wrong 'valid':\n" + "\n".join(wrong[:20])
