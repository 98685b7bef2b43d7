"""Tokens/s of ``ds_wizard.train`` against a bare DeepSpeed loop, run alternately.

    .venv/bin/python benchmarks/train_throughput.py [--preset tiny_mamba] [--rounds 3]
        [--steps 12] [--warmup 2] [--num-gpus N]

Both sides run under the real ``deepspeed`` launcher with the same DeepSpeed JSON, the
same model and the same tokens. A is ``ds-wizard``'s launcher API + ``ds_wizard.train``
(metrics, per-step loss/stop all-reduce, checkpoints at the end); B is
``benchmarks/bare_deepspeed_loop.py``. They alternate A B A B … so drift in the machine's
load hits both. Each side's tokens/s counts the steps after ``--warmup``; A's comes from
its metrics.jsonl (elapsed_s), B's from its own clock over the same steps. Start-up and
the final checkpoint are outside both windows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from ds_wizard.core.runs.metrics import read_metrics
from ds_wizard.launch import command, supervisor
from ds_wizard.launch import plan as planning

HERE = Path(__file__).resolve().parent


def run_ds_wizard(preset: str, num_gpus: int | None, steps: int, warmup: int,
                  runs_dir: Path) -> tuple[float, float, planning.PreparedRun]:
    plan = planning.prepare_run(
        planning.LaunchRequest(preset, num_gpus, steps=steps, runs_dir=runs_dir))
    # run_foreground, not a bare start(): Ctrl-C must not leave the ranks running
    _, code, signum = supervisor.run_foreground(plan, on_line=lambda line: None)
    if signum is not None:
        raise SystemExit(128 + signum)
    if code:
        raise SystemExit(f"ds_wizard.train failed ({code}); see {plan.paths.log}")
    records = {r["step"]: r for r in read_metrics(plan.paths.metrics)}
    seconds = records[steps]["elapsed_s"] - records[warmup]["elapsed_s"]
    tokens = records[steps]["tokens"] - records[warmup]["tokens"]
    per_step = statistics.median(records[s]["tokens_per_s"] for s in range(warmup + 1,
                                                                           steps + 1))
    return tokens / seconds, per_step, plan


def run_bare(plan: planning.PreparedRun, steps: int, warmup: int) -> tuple[float, float]:
    """B, with A's ranks, environment, preset snapshot and DeepSpeed JSON."""
    paths = plan.paths
    cmd = [*command.deepspeed_launcher(),
           *command.rank_selection(plan.accelerator.kind, plan.world_size),
           f"--master_port={command.free_port()}",
           str(HERE / "bare_deepspeed_loop.py"),
           "--preset", str(paths.preset), "--deepspeed_config", str(paths.config),
           "--steps", str(steps), "--warmup", str(warmup)]
    out = subprocess.run(cmd, capture_output=True, text=True,
                         env={**os.environ, **plan.env}, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("BARE "):
            result = json.loads(line[5:])
            return float(result["tokens_per_s"]), float(result["median_step_tokens_per_s"])
    raise SystemExit(f"bare loop failed ({out.returncode}):\n{out.stdout[-3000:]}"
                     f"{out.stderr[-3000:]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny_mamba")
    p.add_argument("--num-gpus", type=int, default=None)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args()
    if not 1 <= args.warmup < args.steps:
        p.error("need 1 <= --warmup < --steps: the window starts after a warm-up step")
    rows = []
    with tempfile.TemporaryDirectory(prefix="ds-wizard-bench-") as tmp:
        for r in range(1, args.rounds + 1):
            a, a_med, plan = run_ds_wizard(args.preset, args.num_gpus, args.steps,
                                           args.warmup, Path(tmp))
            b, b_med = run_bare(plan, args.steps, args.warmup)
            rows.append((r, a, b, a_med, b_med))
            print(f"round {r}: ds_wizard.train {a:,.0f} tok/s (median step {a_med:,.0f}), "
                  f"bare {b:,.0f} tok/s (median step {b_med:,.0f})", file=sys.stderr,
                  flush=True)
    print(f"\npreset {args.preset}, {args.steps} steps per run, first {args.warmup} "
          "not timed, alternating A (ds_wizard.train) and B (bare loop)\n")
    print("| round | A tok/s (window) | B tok/s (window) | ratio | A median step | "
          "B median step | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r, a, b, am, bm in rows:
        print(f"| {r} | {a:,.0f} | {b:,.0f} | {a / b:.3f} | {am:,.0f} | {bm:,.0f} | "
              f"{am / bm:.3f} |")
    med = statistics.median
    print(f"| median | {med(x[1] for x in rows):,.0f} | {med(x[2] for x in rows):,.0f} | "
          f"{med(x[1] / x[2] for x in rows):.3f} | {med(x[3] for x in rows):,.0f} | "
          f"{med(x[4] for x in rows):,.0f} | {med(x[3] / x[4] for x in rows):.3f} |")


if __name__ == "__main__":
    main()
