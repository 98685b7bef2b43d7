"""Time ``core.check.explain`` on the inputs that made it quadratic (issue 23): a run of
digits or spaces in the pasted line, and a big log scanned line by line.

    .venv/bin/python benchmarks/explain_speed.py [--quick]

Each line: the input, its size, milliseconds (best of 3; ``--quick``: one try). Linear
means ten times the input takes about ten times as long; the target for 800,000 digits is
under one second (the quadratic version took 59 s for 80,000).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ds_wizard.core.check.explain import explain, relevant_text  # noqa: E402

LINE = (b"AssertionError: Check batch related parameters. train_batch_size is not equal to "
        b"micro_batch_per_gpu * gradient_acc_step * world_size 16 != 2 * 1 * 4\n")


def cases(n: int) -> dict[str, object]:
    log = (b"[INFO] step done, loss 1.0 " + b"x" * 100 + b"\n") * n + LINE
    chunks = [log[i:i + (1 << 20)] for i in range(0, len(log), 1 << 20)]  # as read
    return {f"digits {n:,}": lambda: explain("16 != 4 * 2 * " + "9" * n),
            f"spaces {n:,}": lambda: explain("1" + " " * n + "!= 2"),
            f"log {len(log):,} bytes": lambda: explain(relevant_text(chunks))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one try per case (a smoke run)")
    args = ap.parse_args(argv)
    tries = 1 if args.quick else 3
    for n in (80_000, 800_000):
        for name, run in cases(n).items():
            best = min(_once(run) for _ in range(tries))  # type: ignore[arg-type]
            print(f"{name}: {best * 1000:.1f} ms")
    return 0


def _once(run: object) -> float:
    began = time.perf_counter()
    run()  # type: ignore[operator]
    return time.perf_counter() - began


if __name__ == "__main__":
    sys.exit(main())
