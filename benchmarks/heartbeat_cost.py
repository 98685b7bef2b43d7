"""What the ranks' heartbeats cost per training step (issue 22), against the step time.

    .venv/bin/python benchmarks/heartbeat_cost.py [--beats 200000] [--run runs/NAME]

Each rank writes ``4 × gradient_accumulation_steps`` beats per optimizer step (data,
forward, backward, step per micro-step: ``ds_wizard/train/loop.py``), each one
``os.pwrite`` of a 160-byte record (``ds_wizard/train/heartbeat.py``). This times that
call in a tight loop on the run directory's disk and divides by the median step time of a
real run (``--run``: its metrics.jsonl; default: the newest run under runs/). A difference
this small is far below the noise of an A/B training benchmark on a shared CPU machine,
so it is measured directly.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ds_wizard.core.runs.metrics import read_metrics
from ds_wizard.train.heartbeat import Heartbeat


def beat_cost_s(directory: Path, n: int, rounds: int = 5) -> float:
    """The median over ``rounds`` of the mean seconds per beat."""
    hb = Heartbeat(directory, rank=0, local_rank=0)
    per = []
    try:
        for _ in range(rounds):
            t0 = time.perf_counter()
            for i in range(n):
                hb.beat(i, "forward")
            per.append((time.perf_counter() - t0) / n)
    finally:
        hb.close()
    return statistics.median(per)


def step_time_s(run: Path) -> tuple[float, int]:
    """Median seconds per optimizer step of a real run, and its gradient accumulation."""
    records = read_metrics(run / "metrics.jsonl")
    times = []
    for a, b in itertools.pairwise(records):
        if b["step"] > a["step"]:
            times.append((b["elapsed_s"] - a["elapsed_s"]) / (b["step"] - a["step"]))
    if not times:
        raise SystemExit(f"error: {run} has fewer than two logged steps")
    cfg = json.loads((run / "ds_config.json").read_text())
    return statistics.median(times), int(cfg.get("gradient_accumulation_steps", 1))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--beats", type=int, default=200_000)
    p.add_argument("--run", type=Path, default=None, help="a finished run directory")
    p.add_argument("--quick", action="store_true", help="20,000 beats")
    args = p.parse_args()
    run = args.run
    if run is None:
        runs = sorted(Path("runs").glob("*/metrics.jsonl"), key=lambda f: f.stat().st_mtime)
        if not runs:
            print("error: no run under runs/ (pass --run DIR)", file=sys.stderr)
            return 1
        run = runs[-1].parent
    with tempfile.TemporaryDirectory(dir=run) as d:
        cost = beat_cost_s(Path(d), 20_000 if args.quick else args.beats)
    step, gas = step_time_s(run)
    per_step = 4 * gas * cost
    print(f"heartbeat: {cost * 1e6:.2f} µs per beat (os.pwrite, {run})")
    print(f"run {run.name}: median step {step:.3f} s, gradient accumulation {gas}: "
          f"{4 * gas} beats = {per_step * 1e6:.1f} µs per step = "
          f"{100 * per_step / step:.4f} % of the step time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
