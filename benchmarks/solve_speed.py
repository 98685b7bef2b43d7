"""Time ``core.batch.solve`` on the inputs that used to freeze the wizard (issue 14).

    .venv/bin/python benchmarks/solve_speed.py [--quick]

Each line: world size, target, milliseconds (best of 5; ``--quick``: one try, for the slow
test lane that only checks the benchmark still runs). The target is under 100 ms.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ds_wizard.core.batch.batchmath import MAX_BATCH_VALUE, solve  # noqa: E402

CASES = [(1, 2_000_000), (1, MAX_BATCH_VALUE), (8, MAX_BATCH_VALUE * 1024 * 8),
         (3, 10**24 + 7), (1, 1_048_577), (4, 128)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one try per case (a smoke run)")
    args = ap.parse_args(argv)
    tries = 1 if args.quick else 5
    for ws, target in CASES:
        best = min(_once(ws, target) for _ in range(tries))
        print(f"solve({ws}, {target}): {best * 1000:.2f} ms")
    return 0


def _once(ws: int, target: int) -> float:
    began = time.perf_counter()
    solve(ws, target)
    return time.perf_counter() - began


if __name__ == "__main__":
    sys.exit(main())
