"""Tokens/s of ``ds_wizard.train`` against a bare DeepSpeed loop, run alternately.

    .venv/bin/python benchmarks/train_throughput.py [--preset tiny_mamba] [--rounds 3]
        [--steps 12] [--warmup 2] [--num-gpus N] [--set KEY=VALUE ...] [--quick]

Both sides run under the real ``deepspeed`` launcher with the same DeepSpeed JSON, the
same model and the same tokens. A is ``ds-wizard``'s launcher API + ``ds_wizard.train``
(metrics, per-step loss/stop all-reduce, checkpoints at the end); B is
``benchmarks/bare_deepspeed_loop.py``. They alternate A B A B … so drift in the machine's
load hits both. Each side's tokens/s counts the steps after ``--warmup``; A's comes from
its metrics.jsonl (elapsed_s), B's from its own clock over the same steps. Start-up and
the final checkpoint are outside both windows.

``--quick`` runs one round of 2 steps on one rank with a shrunken model (QUICK_SETS): its
figures mean nothing, it shows that both sides still start, train and report (the slow
test lane runs it).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.runs.metrics import read_metrics
from ds_wizard.launch import client, command
from ds_wizard.launch import plan as planning

HERE = Path(__file__).resolve().parent
QUICK_SETS = ("model.d_model=64", "model.n_layer=1", "train.seq_len=32",
              "batch.global_batch=2", "batch.micro_batch=2")


def run_ds_wizard(preset: str, num_gpus: int | None, steps: int, warmup: int,
                  runs_dir: Path, sets: list[str]) -> tuple[float, float, planning.PreparedRun]:
    """A: the run as `ds-wizard launch` starts it, under its own supervisor."""
    plan = planning.prepare_run(planning.LaunchRequest(preset, num_gpus, sets=sets, steps=steps,
                                                       runs_dir=runs_dir))
    sup = client.start_supervisor(plan, on_stderr=lambda line: None)
    try:
        assert sup.proc is not None  # a foreground start keeps its handle
        code = sup.proc.wait()
    except KeyboardInterrupt:
        # the supervisor has its own session, so Ctrl-C reaches only this process:
        # end the run here, or its ranks would keep training
        with contextlib.suppress(DsWizardError):  # it ended meanwhile
            client.stop_run(plan.paths.root, now=True)
        raise
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
    # A's own launcher and rank flags (everything before --master_port), so B runs the
    # same ranks on the same devices; the launcher adds --local_rank for the script
    ranks = list(itertools.takewhile(lambda arg: not arg.startswith("--master_port="),
                                     plan.command))
    cmd = [*ranks, f"--master_port={command.free_port()}",
           str(HERE / "bare_deepspeed_loop.py"),
           "--preset", str(paths.preset), "--deepspeed_config", str(paths.config),
           "--steps", str(steps), "--warmup", str(warmup)]
    # its own session, as A's supervisor has: Ctrl-C here ends the whole launcher tree
    # below, ranks included, rather than only the launcher subprocess.run would kill
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **plan.env}, start_new_session=True)
    try:
        stdout, stderr = proc.communicate()
    except KeyboardInterrupt:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)  # DeepSpeed's launcher ends its ranks on it
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group is left
        proc.communicate()
        raise
    for line in stdout.splitlines():
        if line.startswith("BARE "):
            result = json.loads(line[5:])
            return float(result["tokens_per_s"]), float(result["median_step_tokens_per_s"])
    raise SystemExit(f"bare loop failed ({proc.returncode}):\n{stdout[-3000:]}"
                     f"{stderr[-3000:]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny_mamba")
    p.add_argument("--num-gpus", type=int, default=None)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="a preset override for both sides (as `ds-wizard launch --set`)")
    p.add_argument("--quick", action="store_true",
                   help="1 round, 2 steps, 1 rank, a shrunken model (a smoke run)")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.steps, args.warmup = 1, 2, 1
        args.num_gpus = args.num_gpus or 1
        args.sets = [*QUICK_SETS, *args.sets]
    if not 1 <= args.warmup < args.steps:
        p.error("need 1 <= --warmup < --steps: the window starts after a warm-up step")
    rows = []
    with tempfile.TemporaryDirectory(prefix="ds-wizard-bench-") as tmp:
        for r in range(1, args.rounds + 1):
            a, a_med, plan = run_ds_wizard(args.preset, args.num_gpus, args.steps,
                                           args.warmup, Path(tmp), args.sets)
            b, b_med = run_bare(plan, args.steps, args.warmup)
            rows.append((r, a, b, a_med, b_med))
            print(f"round {r}: ds_wizard.train {a:,.0f} tok/s (median step {a_med:,.0f}), "
                  f"bare {b:,.0f} tok/s (median step {b_med:,.0f})", file=sys.stderr,
                  flush=True)
    sets = f" with {' '.join(args.sets)}" if args.sets else ""
    print(f"\npreset {args.preset}{sets}, {plan.world_size} rank(s) ({plan.accelerator.kind}), "
          f"{args.steps} steps per run, first {args.warmup} not timed, alternating A "
          "(ds_wizard.train) and B (bare loop)\n")
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
    try:
        main()
    except KeyboardInterrupt:  # both sides' processes are ended by then
        print("train_throughput: interrupted; no run is left behind", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
