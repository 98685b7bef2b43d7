"""The bare reference for train_throughput.py: the smallest DeepSpeed training loop.

Same model (built by ds_wizard.train.model), same DeepSpeed JSON, same tokens; no metrics
file, no per-step all-reduce, no stop handling, no checkpoints. Started by the deepspeed
launcher (``train_throughput.py`` starts it with A's own launcher and rank flags, which
add ``--local_rank``); rank 0 prints one JSON line with its tokens/s. It has no quick mode
of its own: ``train_throughput.py --quick`` runs it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import deepspeed
import numpy as np
import torch
import torch.distributed as dist
from deepspeed.accelerator import get_accelerator

from ds_wizard.core.plan.params import padded_vocab
from ds_wizard.core.presets.lookup import read_preset_file
from ds_wizard.core.runs.data import ByteTokenizer, load_tokens
from ds_wizard.train.device import select_device
from ds_wizard.train.model import build_model, choose_backend
from ds_wizard.train.recipe import enable_block_checkpointing, weight_decay_groups


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--local_rank", type=int, default=None)
    p.add_argument("--preset", required=True)
    p.add_argument("--deepspeed_config", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args()

    spec = read_preset_file(Path(args.preset)).spec
    with open(args.deepspeed_config) as fh:
        cfg = json.load(fh)
    deepspeed.init_distributed()
    # this rank's own device before anything allocates (as ds_wizard.train does)
    select_device(fallback=args.local_rank)
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(spec.train.seed)
    # the backend ds_wizard.train picks: by DeepSpeed's accelerator (DS_ACCELERATOR=cpu)
    cuda = get_accelerator().device_name() == "cuda"
    model = build_model(spec.model, choose_backend("auto", cuda=cuda, arch=spec.model.arch).name,
                        cfg)
    if spec.train.activation_checkpointing:
        enable_block_checkpointing(model)
    vocab = padded_vocab(spec.model.vocab_size, spec.model.pad_vocab_size_multiple)
    tokens = load_tokens(None, ByteTokenizer(), vocab).tokens
    engine, _, _, _ = deepspeed.initialize(model=model,
                                           model_parameters=weight_decay_groups(model),
                                           config=cfg)
    micro, gas = engine.train_micro_batch_size_per_gpu(), engine.gradient_accumulation_steps()
    seq = spec.train.seq_len
    n = len(tokens) // seq
    i = rank
    t0 = None
    marks = []
    for step in range(1, args.steps + 1):
        for _ in range(gas):
            rows = [tokens[(k % n) * seq:(k % n + 1) * seq] for k in range(i, i + micro * world,
                                                                          world)]
            i += micro * world
            ids = torch.from_numpy(np.stack(rows).astype("int64"))
            ids = ids.to(engine.device)
            logits = engine(ids).logits
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)).float(), ids[:, 1:].reshape(-1))
            engine.backward(loss)
            engine.step()
        marks.append(time.perf_counter())
        if step == args.warmup:
            t0 = marks[-1]
    elapsed = time.perf_counter() - t0
    if rank == 0:
        timed = args.steps - args.warmup
        per_step = engine.train_batch_size() * seq
        steps_s = sorted(b - a for a, b in itertools.pairwise(marks[args.warmup - 1:]))
        print("BARE " + json.dumps({"tokens_per_s": timed * per_step / elapsed,
                                    "median_step_tokens_per_s":
                                        per_step / steps_s[len(steps_s) // 2],
                                    "steps": timed, "seconds": elapsed}), flush=True)


if __name__ == "__main__":
    main()
