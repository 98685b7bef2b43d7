"""What checkpoint integrity costs: SHA-256 of checkpoint files, streamed as resume does.

    .venv/bin/python benchmarks/checkpoint_hash.py [--size-mib 512] [--files 4] [--quick]

Writes ``--files`` files of ``--size-mib`` MiB each into a temp directory, then times
``core.runs.write_marker`` (hash every file, in this one process) and
``core.runs.check_checkpoint`` (sizes, then every SHA-256), both from the page cache as
at save time. Scale the per-byte figure by checkpoint size / ranks for a real model
(docs/checkpoints.md#what-hashing-costs). Target: at least 500 MB/s per process, so a
7B checkpoint (~100 GB) split over 8 ranks verifies in under half a minute. The exit
status is 1 when the target is missed, except with ``--quick`` (2 files of 4 MiB: too
small to time, it only shows the benchmark still runs).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ds_wizard.core.runs import rundir  # noqa: E402

TARGET_MB_S = 500.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--quick", action="store_true",
                    help="2 files of 4 MiB, no verdict on the target (a smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.size_mib, args.files = 4, 2
    with tempfile.TemporaryDirectory() as tmp:
        tag = Path(tmp) / rundir.checkpoint_tag(1)
        tag.mkdir()
        block = os.urandom(1 << 20)
        for i in range(args.files):
            with (tag / f"zero_pp_rank_{i}_mp_rank_00_optim_states.pt").open("wb") as fh:
                for _ in range(args.size_mib):
                    fh.write(block)
        total = args.files * args.size_mib * (1 << 20)
        t0 = time.perf_counter()
        rundir.write_marker(Path(tmp), tag.name, 1, {})
        t_save = time.perf_counter() - t0
        (info,) = rundir.scan_checkpoints(tmp)
        t0 = time.perf_counter()
        problems = rundir.check_checkpoint(info)
        t_check = time.perf_counter() - t0
        assert problems == [], problems
    rate = total / 1e6 / max(t_check, 1e-9)
    verdict = ("not judged, --quick" if args.quick
               else "met" if rate >= TARGET_MB_S else "MISSED")
    print(f"{total / 1e9:.2f} GB in {args.files} files: marker (hash all) {t_save:.2f} s, "
          f"verify {t_check:.2f} s = {rate:,.0f} MB/s per process "
          f"(target ≥ {TARGET_MB_S:.0f} MB/s: {verdict})")
    return 0 if rate >= TARGET_MB_S or args.quick else 1


if __name__ == "__main__":
    raise SystemExit(main())
