"""Check the memory model against a real GPU: a few training steps with the mamba-ssm kernels
at several micro-batch sizes, ``torch.cuda.max_memory_allocated`` against the estimate.

    .venv/bin/python benchmarks/gpu_memory_check.py                       # default presets
    .venv/bin/python benchmarks/gpu_memory_check.py --preset mamba_790m --micro 1 2 4 \\
        --out benchmarks/results/gpu_memory_check.md
    .venv/bin/python benchmarks/gpu_memory_check.py --quick               # one point, 1 step

Needs a CUDA GPU, ``mamba-ssm`` and ``causal-conv1d`` (``pip install -e .[gpu]``). Without
them it says what is missing and exits 0, so CI can run it anywhere; with ``--quick`` it
then still prints the estimate side of its quick point, so the slow test lane sees the
benchmark's use of the memory model break on any machine.

What runs: mamba-ssm's own ``MambaLMHeadModel`` (fused add+RMSNorm, ``MambaInnerFn`` /
``mamba_split_conv1d_scan_combined``: the ``mamba_ssm`` backend of the estimate) in bf16,
on one GPU, with a plain loop that keeps exactly the state DeepSpeed's ZeRO-0 bf16 optimizer
keeps: 16-bit params and grads, a persistent fp32 grad buffer, fp32 master params and Adam
moments (2 + 2 + 4 + 4 + 8 bytes per parameter). A plain loop instead of DeepSpeed because one
process without a launcher or NCCL is what makes ``max_memory_allocated`` a clean number; the
fused AdamW kernel stands in for DeepSpeed's FusedAdam (neither allocates per-step
temporaries the size of the model).

What is compared: the allocator's peak against the estimate's params + grads + optimizer +
activations + logits. The CUDA context and allocator fragmentation are outside
``max_memory_allocated`` (and the estimate's overhead line); there are no DeepSpeed
communication buckets at ZeRO-0.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ds_wizard.core.plan.memory import GiB, estimate  # noqa: E402
from ds_wizard.core.presets.lookup import load_preset  # noqa: E402
from ds_wizard.core.presets.schema import PresetSpec  # noqa: E402

DEFAULT_PRESETS = ("mamba_370m", "mamba2_130m")
DEFAULT_MICRO = (1, 2, 4, 8)
QUICK = ("mamba2_130m", 1, 1)  # --quick: preset, micro-batch, steps
TARGET = 0.10  # the goal: within ±10%


def missing_requirements() -> str | None:
    """Why this machine cannot run the check, or None."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU visible to torch (CPU-only build or no device)"
    try:
        import causal_conv1d  # noqa: F401
        import mamba_ssm  # noqa: F401
    except ImportError as exc:
        return f"the mamba-ssm kernels are not installed ({exc}); pip install -e .[gpu]"
    return None


def build_model(spec: PresetSpec):  # type: ignore[no-untyped-def]
    import torch
    from mamba_ssm.models.config_mamba import MambaConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    m = spec.model
    ssm_cfg: dict = {"layer": "Mamba1" if m.arch == "mamba1" else "Mamba2",
                     "d_state": m.d_state, "d_conv": m.d_conv, "expand": m.expand}
    if m.arch == "mamba2":
        ssm_cfg.update(headdim=m.headdim, ngroups=m.ngroups, chunk_size=m.chunk_size)
    wanted = dict(d_model=m.d_model, n_layer=m.n_layer, vocab_size=m.vocab_size,
                  ssm_cfg=ssm_cfg, rms_norm=True, residual_in_fp32=True, fused_add_norm=True,
                  pad_vocab_size_multiple=m.pad_vocab_size_multiple,
                  tie_embeddings=m.tie_embeddings, d_intermediate=0)
    # MambaConfig has gained fields over releases; pass the ones this version knows
    known = {f.name for f in dataclasses.fields(MambaConfig)}
    config = MambaConfig(**{k: v for k, v in wanted.items() if k in known})
    return MambaLMHeadModel(config, device="cuda", dtype=torch.bfloat16)


def measure(spec: PresetSpec, micro: int, steps: int) -> tuple[int | None, int]:
    """(peak bytes allocated, or None on OOM; vocabulary size used)."""
    import torch
    import torch.nn.functional as F

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model = opt = master = grads32 = None
    try:
        model = build_model(spec).train()
        params = [p for p in model.parameters() if p.requires_grad]
        master = [p.detach().float().clone() for p in params]
        grads32 = [torch.zeros_like(p) for p in master]
        for mp, g in zip(master, grads32, strict=True):
            mp.grad = g
        opt = torch.optim.AdamW(master, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                                fused=True)
        vocab = model.lm_head.weight.shape[0]
        seq = spec.train.seq_len
        gen = torch.Generator(device="cuda").manual_seed(0)
        for _ in range(steps):
            ids = torch.randint(0, vocab, (micro, seq + 1), device="cuda", generator=gen)
            logits = model(ids[:, :-1]).logits
            loss = F.cross_entropy(logits.reshape(-1, vocab).float(), ids[:, 1:].reshape(-1))
            loss.backward()
            del logits, loss
            for p, g in zip(params, grads32, strict=True):
                g.copy_(p.grad)  # the fp32 accumulation buffer DeepSpeed keeps
                p.grad = None
            opt.step()
            with torch.no_grad():
                for p, mp in zip(params, master, strict=True):
                    p.copy_(mp)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(), vocab
    except torch.cuda.OutOfMemoryError:
        return None, spec.model.vocab_size
    finally:
        del model, opt, master, grads32
        torch.cuda.empty_cache()


def compared(spec: PresetSpec, micro: int) -> int:
    est = estimate(spec, world_size=1, micro_batch=micro, zero_stage=0, precision="bf16",
                   offload_optimizer=False, offload_param=False, backend="mamba_ssm",
                   activation_checkpointing=False)
    return est.total - est.overhead


def run(presets: list[str], micros: list[int], steps: int) -> list[dict]:
    import torch

    gpu = torch.cuda.get_device_properties(0)
    rows = []
    for name in presets:
        spec = load_preset(name).spec
        for micro in micros:
            peak, _ = measure(spec, micro, steps)
            predicted = compared(spec, micro)
            rows.append({"preset": name, "arch": spec.model.arch, "micro": micro,
                         "seq_len": spec.train.seq_len, "measured": peak,
                         "predicted": predicted, "gpu": gpu.name,
                         "gpu_total": gpu.total_memory,
                         "error": None if peak is None else predicted / peak - 1})
            print(f"{name} micro {micro}: measured "
                  f"{'OOM' if peak is None else f'{peak / GiB:.2f} GiB'}, "
                  f"estimate {predicted / GiB:.2f} GiB", flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    head = rows[0]["gpu"] if rows else "?"
    lines = [
        f"GPU: {head}; mamba-ssm kernels, bf16, one GPU, ZeRO-0-equivalent optimizer state.",
        "",
        "| preset | arch | micro | seq_len | max_memory_allocated | estimate | error |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        measured = "OOM" if r["measured"] is None else f"{r['measured'] / GiB:.2f} GiB"
        err = "-" if r["error"] is None else f"{r['error'] * 100:+.1f}%"
        lines.append(f"| {r['preset']} | {r['arch']} | {r['micro']} | {r['seq_len']} | "
                     f"{measured} | {r['predicted'] / GiB:.2f} GiB | {err} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", action="append", dest="presets",
                    help=f"preset to run (repeatable; default {', '.join(DEFAULT_PRESETS)})")
    ap.add_argument("--micro", type=int, nargs="+", default=list(DEFAULT_MICRO))
    ap.add_argument("--steps", type=int, default=3, help="training steps per point")
    ap.add_argument("--out", type=Path, help="also write the markdown table here")
    ap.add_argument("--quick", action="store_true",
                    help=f"{QUICK[0]} at micro-batch {QUICK[1]}, {QUICK[2]} step (a smoke run)")
    args = ap.parse_args(argv)
    if args.quick:
        args.presets, args.micro, args.steps = [QUICK[0]], [QUICK[1]], QUICK[2]
    presets = args.presets or list(DEFAULT_PRESETS)
    why = missing_requirements()
    if why:
        print(f"gpu_memory_check: not run: {why}")
        if args.quick:  # what can be checked without a GPU: the estimate of each point
            for name in presets:
                spec = load_preset(name).spec
                for micro in args.micro:
                    print(f"{name} micro {micro}: estimate {compared(spec, micro) / GiB:.2f} "
                          "GiB (not measured)")
        return 0
    rows = run(presets, args.micro, args.steps)
    text = markdown(rows)
    print(text, end="")
    if args.out:
        from ds_wizard.core.base.fsio import atomic_write_text

        atomic_write_text(args.out, text)
    off = [r for r in rows if r["error"] is not None and abs(r["error"]) > TARGET]
    if off:
        print(f"{len(off)} point(s) outside ±{TARGET:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
