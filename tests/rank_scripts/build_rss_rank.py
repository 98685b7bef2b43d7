"""One CPU rank building ``mamba_130m`` as the trainer does (``train.model.build_model``,
ZeRO-2 fp32: the CPU launch's config), with its resident memory sampled every 2 ms.
Prints RESULT JSON: the parameters and the RSS peak above the level before the build.

    deepspeed --num_accelerators 2 tests/rank_scripts/build_rss_rank.py
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import deepspeed
import psutil
import torch.distributed as dist
from transformers import Mamba2ForCausalLM, MambaForCausalLM  # noqa: F401 (imported first)

from ds_wizard.core.presets.overrides import load_with_overrides
from ds_wizard.train import model as models

CONFIG = {"train_batch_size": 2, "train_micro_batch_size_per_gpu": 1,
          "gradient_accumulation_steps": 1, "zero_optimization": {"stage": 2}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--local_rank", type=int, default=None)
    ap.parse_args()
    deepspeed.init_distributed()
    spec = load_with_overrides("mamba_130m", []).spec.model
    me = psutil.Process()
    dist.barrier()  # both ranks build at once, as they do in a launch
    before = me.memory_info().rss
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], me.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    model = models.build_model(spec, "transformers", CONFIG)
    done.set()
    sampler.join()
    peak[0] = max(peak[0], me.memory_info().rss)
    params = models.numel(model)
    print("RESULT " + json.dumps({"rank": dist.get_rank(), "params": params,
                                  "fp32_bytes": params * 4, "peak_above": peak[0] - before,
                                  "held": me.memory_info().rss - before}), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
