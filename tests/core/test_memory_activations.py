"""The activation estimate for transformers' pure-PyTorch Mamba path, against an exact count
of the bytes autograd saves for backward on CPU (``benchmarks/activation_table.py``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "benchmarks" / "results" / "activation_table.md"


def _bench():
    spec = importlib.util.spec_from_file_location(
        "activation_table", ROOT / "benchmarks" / "activation_table.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules["activation_table"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_torch_path_estimate_is_within_15_percent_of_the_measurement():
    bench = _bench()
    rows = bench.rows()
    table = bench.markdown(rows)
    print("\n" + table)  # shown with -s, and in the failure report otherwise
    archs = {r["point"].arch for r in rows}
    dtypes = {r["point"].dtype for r in rows}
    assert archs == {"mamba1", "mamba2"} and dtypes == {"fp32", "bf16"}
    for field in ("d_model", "n_layer", "micro", "seq_len"):
        assert len({getattr(r["point"], field) for r in rows}) > 1, field
    bad = [r for r in rows if abs(r["error"]) > bench.TOLERANCE]
    assert not bad, table
    # the README quotes this file: it must be what the measurement gives today
    assert TABLE.read_text(encoding="utf-8") == table, (
        "benchmarks/results/activation_table.md is stale; regenerate it with "
        "`.venv/bin/python benchmarks/activation_table.py --out "
        "benchmarks/results/activation_table.md`")
