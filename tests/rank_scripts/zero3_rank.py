"""One rank of a real 2-rank ZeRO-3 run on CPU: build (transformers under zero.Init, or a
CPU-built model partitioned with zero.Init(module=...), mamba_ssm's path), train two steps
with ds-wizard's checkpointing, export module by module onto rank 0. Prints RESULT JSON.

    deepspeed --num_accelerators 2 tests/rank_scripts/zero3_rank.py --out DIR --mode MODE
"""

from __future__ import annotations

import argparse
import json
import weakref
from pathlib import Path

import deepspeed
import torch
import torch.distributed as dist

from ds_wizard.core.plan.params import count_params
from ds_wizard.core.presets.schema import ModelSpec
from ds_wizard.train import model as models
from ds_wizard.train.device import select_device
from ds_wizard.train.recipe import enable_block_checkpointing, weight_decay_groups

SPEC = ModelSpec(arch="mamba1", d_model=64, n_layer=2, vocab_size=256,
                 pad_vocab_size_multiple=8, d_state=8)
CONFIG = {
    "train_batch_size": 2, "train_micro_batch_size_per_gpu": 1,
    "gradient_accumulation_steps": 1, "gradient_clipping": 1.0, "steps_per_print": 1000,
    "zero_optimization": {"stage": 3, "overlap_comm": False, "contiguous_gradients": True},
    "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "weight_decay": 0.1}},
    "wall_clock_breakdown": False,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--local_rank", type=int, default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--mode", choices=["context", "convert"], required=True)
    args = ap.parse_args()
    deepspeed.init_distributed()
    select_device(fallback=args.local_rank)
    rank = dist.get_rank()

    # every parameter as it is registered, and the most elements materialised at once
    live: list[weakref.ref] = []
    peak = [0]

    def on_register(module, name, param):  # type: ignore[no-untyped-def]
        if param is not None:
            live.append(weakref.ref(param))
            now = sum(p.data.numel() for r in live if (p := r()) is not None)
            peak[0] = max(peak[0], now)

    handle = torch.nn.modules.module.register_module_parameter_registration_hook(on_register)
    torch.manual_seed(0)
    if args.mode == "context":
        model = models.build_model(SPEC, "transformers", CONFIG)
    else:
        model = models._build_transformers(SPEC)
        models.partition_built_model(model, CONFIG)
    handle.remove()
    params = {id(p): p for p in model.parameters()}.values()
    local = sum(p.ds_tensor.numel() for p in params)
    resident = sum(p.data.numel() for p in params)
    full = sum(p.ds_numel for p in params)
    # the weights were initialised as mamba does (A = 1..N per channel, D = 1), not left
    # as the empty placeholders zero.Init partitions
    mixer = model.backbone.layers[0].mixer
    with deepspeed.zero.GatheredParameters([mixer.A_log, mixer.D]):
        a_expected = torch.log(torch.arange(1, SPEC.d_state + 1, dtype=torch.float32))
        init_ok = bool(torch.allclose(mixer.A_log.float(), a_expected.expand_as(mixer.A_log))
                       and torch.all(mixer.D == 1))

    enable_block_checkpointing(model)
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=weight_decay_groups(model),
                                           config=CONFIG)
    gen = torch.Generator().manual_seed(rank)
    losses = []
    for _ in range(2):
        ids = torch.randint(0, 256, (1, 16), generator=gen)
        logits = engine(ids).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)),
                                                 ids[:, 1:].reshape(-1))
        engine.backward(loss)
        engine.step()
        losses.append(float(loss))
    state = models.gather_zero3_state_dict(engine)
    exported = None
    if rank == 0:
        out = Path(args.out)
        models.export_pretrained(engine.module, "transformers", out, state_dict=state)
        from transformers import MambaForCausalLM

        loaded = MambaForCausalLM.from_pretrained(str(out))
        exported = {
            "numel": models.numel(loaded),
            "matches": all(torch.equal(loaded.state_dict()[k].float(), v.float())
                           for k, v in state.items()),
        }
    print("RESULT " + json.dumps({
        "rank": rank, "expected": count_params(SPEC), "full": full, "local": local,
        "resident": resident, "peak_materialised": peak[0], "losses": losses,
        "init_ok": init_ok,
        "exported": exported}), flush=True)
    dist.barrier()


if __name__ == "__main__":
    main()
