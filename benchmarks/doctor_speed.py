"""Wall-clock time of ``ds-wizard doctor`` (and ``--json``) as whole processes.

    .venv/bin/python benchmarks/doctor_speed.py [--runs 5] [--collectives]

Target (issue 19): under 5 s median on the development machine without the collective
test; with ``--collectives`` (2 gloo ranks) under 30 s. The doctor's kernel-probe cache
starts empty in a private directory; the first run is reported on its own line (on a GPU
machine it pays for the kernel import in a fresh interpreter), the timed runs after it
read the cache, as every launch after the first does.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 5.0
COLLECTIVES_TARGET_S = 30.0


def _cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def timed(args: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(wall s, CPU s of the process and its children, exit status). The CPU time is
    what the doctor costs on an idle machine; the wall time also holds the wait for a
    core on a busy one."""
    start, cpu = time.perf_counter(), _cpu()
    done = subprocess.run([sys.executable, "-m", "ds_wizard.cli", "doctor", *args], env=env,
                          cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start, _cpu() - cpu, done.returncode


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--collectives", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "DS_WIZARD_CACHE_DIR": cache,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                           os.environ.get("PYTHONPATH")]))}
        first, first_cpu, rc = timed([], env)
        print(f"first run (empty cache): {first:.2f} s wall, {first_cpu:.2f} s CPU, exit {rc}"
              f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        ok = rc == 0
        rows = [("doctor", []), ("doctor --json", ["--json"])]
        if args.collectives:
            rows.append(("doctor --collectives", ["--collectives"]))
        print("| command | median wall s | min–max s | median CPU s | target |")
        print("| --- | --- | --- | --- | --- |")
        for name, extra in rows:
            runs = args.runs if "--collectives" not in extra else max(1, args.runs // 2)
            times, cpus = [], []
            for _ in range(runs):
                t, c, rc = timed(extra, env)
                times.append(t)
                cpus.append(c)
                ok = ok and rc == 0
            target = COLLECTIVES_TARGET_S if "--collectives" in extra else TARGET_S
            med = statistics.median(times)
            ok = ok and med < target
            print(f"| `ds-wizard {name}` | {med:.2f} | {min(times):.2f}–{max(times):.2f} | "
                  f"{statistics.median(cpus):.2f} | < {target:.0f} s |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
