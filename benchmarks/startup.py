"""Start-up time of the headless CLI against importing DeepSpeed, as whole processes.

    .venv/bin/python benchmarks/startup.py [--runs 9] [--deepspeed-runs 3] [--quick]

Each command runs as a fresh process; the table shows the median and the range of the
wall-clock times. Bytecode for ds_wizard is compiled first (as ``pip install`` does for a
wheel), so a source checkout under PYTHONDONTWRITEBYTECODE is not penalised for
recompiling on every run. The validation cache (``ds_wizard/core/presets/spec_cache.py``) starts
empty in a private directory: the first ``--auto`` run validates the preset with pydantic
and is reported on its own line; the timed runs after it read the cached verdict, as every
run after the first does for a user. Targets: ``--auto --dry-run`` under 0.3 s median and at least
10× faster than ``import deepspeed``; ``check`` (the fast path: the shipped DeepSpeed schema, no
DeepSpeed, torch or pydantic import) under 0.2 s median. ``--quick`` runs each ds-wizard
command once and skips ``import deepspeed`` (seconds): it shows the benchmark still runs.
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 0.3
TARGET_SPEEDUP = 10.0
CHECK_TARGET_SECONDS = 0.2
# A config of the usual shape, with a comment (so the hjson path is timed too) and a
# batch mismatch (so the whole report, suggestions included, is built).
CHECK_CONFIG = """{
  // ZeRO-2, bf16, written for 8 GPUs
  "train_batch_size": 16,
  "train_micro_batch_size_per_gpu": 4,
  "gradient_accumulation_steps": 8,
  "zero_optimization": {"stage": 2, "overlap_comm": true, "offload_optimizer": {"device": "cpu"}},
  "bf16": {"enabled": true},
  "optimizer": {"type": "AdamW", "params": {"lr": 3e-4}},
  "tensorboard": {"enabled": true, "output_path": "runs"},
}
"""


def cli_path() -> str:
    here = Path(sys.executable).with_name("ds-wizard")
    return str(here) if here.exists() else (shutil.which("ds-wizard") or "ds-wizard")


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_runs(cmd: list[str], runs: int, cwd: str) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU seconds per run. CPU time is the steadier figure on a shared
    machine: it does not count time spent waiting for a core."""
    walls, cpus = [], []
    for _ in range(runs):
        cpu0, start = _child_cpu(), time.perf_counter()
        # check exits 1 on the (deliberately) invalid config; anything else is a failure
        proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        if proc.returncode not in (0, 1):
            raise SystemExit(f"{cmd} failed with exit status {proc.returncode}")
        walls.append(time.perf_counter() - start)
        cpus.append(_child_cpu() - cpu0)
    return walls, cpus


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="runs per ds-wizard command")
    parser.add_argument("--deepspeed-runs", type=int, default=3,
                        help="runs of `import deepspeed` (each takes seconds)")
    parser.add_argument("--quick", action="store_true",
                        help="one run per command and no `import deepspeed` (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.deepspeed_runs = 1, 0

    compileall.compile_dir(str(ROOT / "ds_wizard"), quiet=1)
    cli = cli_path()
    cases = [
        ("ds-wizard --auto --num-gpus 4 --preset 7b_mamba --dry-run",
         [cli, "--auto", "--num-gpus", "4", "--preset", "7b_mamba", "--dry-run"], args.runs),
        ("ds-wizard --help", [cli, "--help"], args.runs),
        ("ds-wizard check ds.json --num-gpus 4 (fast path)",
         [cli, "check", "ds.json", "--num-gpus", "4"], args.runs),
        ("python -c pass (interpreter floor)", [sys.executable, "-c", "pass"], args.runs),
        ('python -c "import deepspeed"', [sys.executable, "-c", "import deepspeed"],
         args.deepspeed_runs),
    ]
    results = {}
    load_before = f"{os.getloadavg()[0]:.2f}"
    # an empty directory: no ./presets or config files nearby change what is measured
    with tempfile.TemporaryDirectory() as cwd, tempfile.TemporaryDirectory() as cache:
        os.environ["DS_WIZARD_CACHE_DIR"] = cache
        os.environ.pop("DS_WIZARD_NO_CACHE", None)
        env_note = os.environ.get("PYTHONDONTWRITEBYTECODE")
        Path(cwd, "ds.json").write_text(CHECK_CONFIG)
        label, cmd, _ = cases[0]
        results[label.replace("--dry-run", "--dry-run, first run (cache empty)")] = time_runs(
            cmd, 1, cwd)
        for label, cmd, runs in cases:
            if runs:
                results[label] = time_runs(cmd, runs, cwd)
    width = max(len(label) for label in results)
    print(f"{'command':<{width}} | runs | median s | min s | max s | median CPU s")
    print(f"{'-' * width}-|------|----------|-------|-------|-------------")
    for label, (walls, cpus) in results.items():
        print(f"{label:<{width}} | {len(walls):>4} | {statistics.median(walls):>8.3f} | "
              f"{min(walls):>5.3f} | {max(walls):>5.3f} | {statistics.median(cpus):>12.3f}")
    auto = statistics.median(results[cases[0][0]][0])
    check = statistics.median(results[cases[2][0]][0])
    print()
    print("The first --auto run of a preset validates it with pydantic; later runs of the same "
          "file read the cached verdict.")
    print()
    print(f"--auto median {auto:.3f} s (target < {TARGET_SECONDS} s): "
          f"{'OK' if auto < TARGET_SECONDS else 'MISSED'}")
    print(f"check median {check:.3f} s (target < {CHECK_TARGET_SECONDS} s): "
          f"{'OK' if check < CHECK_TARGET_SECONDS else 'MISSED'}")
    if cases[4][0] in results:
        speedup = statistics.median(results[cases[4][0]][0]) / auto
        print(f"speed-up over import deepspeed: {speedup:.1f}x (target >= "
              f"{TARGET_SPEEDUP:g}x): {'OK' if speedup >= TARGET_SPEEDUP else 'MISSED'}")
    else:
        print("speed-up over import deepspeed: not measured (--deepspeed-runs 0)")
    print(f"load average before/after: {load_before} / {os.getloadavg()[0]:.2f}")
    print(f"cores: {os.cpu_count()}, python {sys.version.split()[0]}, "
          f"PYTHONDONTWRITEBYTECODE={env_note!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
