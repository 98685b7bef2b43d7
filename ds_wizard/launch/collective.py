"""One rank of ``ds-wizard doctor --collectives``: join a process group, time all-reduces.

    python -m ds_wizard.launch.collective --rank 0 --world 2 --port 29517 --backend gloo

Prints JSON lines: ``{"joined": true}`` once the group is up, then (rank 0) the mean time
of an all-reduce of ``--bytes`` and of a one-element all-reduce. A rank that cannot join
within ``--timeout`` seconds prints ``{"error": …}``; the parent names the ranks that never
said they joined. NCCL ranks use GPU ``--rank`` (the ranks of this node).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import timedelta


def say(**msg: object) -> None:
    print(json.dumps(msg), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ds_wizard.launch.collective")
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--world", type=int, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--addr", default="127.0.0.1")
    p.add_argument("--backend", choices=("gloo", "nccl"), default="gloo")
    p.add_argument("--bytes", type=int, default=16 << 20)
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("--iters", type=int, default=5)
    args = p.parse_args(argv)

    import torch
    import torch.distributed as dist

    device = torch.device("cpu")
    if args.backend == "nccl":
        torch.cuda.set_device(args.rank)
        device = torch.device("cuda", args.rank)
    timeout = timedelta(seconds=args.timeout)
    try:
        # rank 0 holds the rendezvous; every rank says when it got there, so a rank that
        # never arrives can be named (init_process_group itself waits for all of them)
        store = dist.TCPStore(args.addr, args.port, args.world, is_master=args.rank == 0,
                              timeout=timeout, wait_for_workers=False)
        store.set(f"arrived/{args.rank}", "1")
        say(joined=True)
        dist.init_process_group(args.backend, store=store, rank=args.rank,
                                world_size=args.world, timeout=timeout)
    except Exception as exc:  # a rendezvous timeout, a refused connection: the result
        say(error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
        return 1
    try:
        big = torch.ones(max(1, args.bytes // 4), dtype=torch.float32, device=device)
        small = torch.ones(1, dtype=torch.float32, device=device)

        def timed(t: torch.Tensor, iters: int) -> float:
            dist.all_reduce(t)  # warm-up: connections and buffers
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(iters):
                dist.all_reduce(t)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return (time.perf_counter() - start) / iters

        seconds = timed(big, args.iters)
        latency = timed(small, args.iters * 4)
        if abs(float(small[0]) - args.world ** (1 + args.iters * 4)) > 1e-3 * float(small[0]):
            say(error=f"wrong all-reduce result {float(small[0])}")
            return 1
        if args.rank == 0:
            say(seconds=seconds, latency_s=latency, bytes=big.numel() * 4)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
