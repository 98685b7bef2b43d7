"""Measure the activation memory of transformers' pure-PyTorch Mamba path on CPU and compare
it with ``ds_wizard.core.plan.memory``'s estimate.

The measurement is exact: every tensor autograd saves for backward during one forward pass
(with the loss) goes through ``torch.autograd.graph.saved_tensors_hooks``; tensors are
deduplicated by their storage (``untyped_storage().data_ptr()``) and the storage sizes are
summed. Parameters are left out (they are model states, not activations).

    .venv/bin/python benchmarks/activation_table.py            # prints the markdown table
    .venv/bin/python benchmarks/activation_table.py --out FILE # also writes it
    .venv/bin/python benchmarks/activation_table.py --quick    # QUICK_GRID only (seconds)

``tests/core/test_memory_activations.py`` runs the same grid and asserts ±15% at every point.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ds_wizard.core.plan.memory import activations  # noqa: E402
from ds_wizard.core.presets.schema import ModelSpec  # noqa: E402

TOLERANCE = 0.15
VOCAB = 256  # small, so the grid is about the layers rather than the lm head


@dataclass(frozen=True)
class Point:
    arch: str
    d_model: int
    n_layer: int
    micro: int
    seq_len: int
    dtype: str  # "fp32" | "bf16"
    d_state: int = 16
    headdim: int = 16
    chunk_size: int = 16
    checkpointing: bool = False  # ds_wizard.train.recipe.enable_block_checkpointing
    mambapy: bool = False  # Mamba-1 on mambapy's parallel scan (what ds_wizard.train uses)


# d_model, layers, micro-batch, sequence length and dtype each vary at least once, for both
# architectures. The pure-PyTorch Mamba-1 scan loops over the sequence in Python, so the
# lengths stay short; the whole grid runs in a few seconds on two cores.
_BASE = tuple(
    Point(arch, d, layers, micro, seq, dtype, **extra)
    for arch, extra in (("mamba1", {}), ("mamba2", {"d_state": 16, "headdim": 16,
                                                     "chunk_size": 16}))
    for dtype in ("fp32", "bf16")
    for d, layers, micro, seq in (
        (64, 1, 1, 32),
        (64, 2, 2, 32),
        (128, 2, 1, 48),
        (96, 3, 3, 24),
    )
)
GRID: tuple[Point, ...] = (
    *_BASE,
    # other state sizes, head widths and chunk lengths, so no two terms coincide
    Point("mamba1", 80, 2, 2, 24, "bf16", d_state=8),
    Point("mamba1", 80, 2, 2, 24, "fp32", d_state=8),
    Point("mamba2", 128, 2, 2, 40, "bf16", d_state=8, headdim=32, chunk_size=32),
    Point("mamba2", 128, 2, 2, 40, "fp32", d_state=32, headdim=64, chunk_size=8),
    # activation checkpointing: only each block's input (and the loss) stays saved
    *(Point(arch, 64, 3, 2, 32, dtype, checkpointing=True)
      for arch in ("mamba1", "mamba2") for dtype in ("fp32", "bf16")),
    # mambapy's parallel scan pads to a power of two; transformers runs it in fp32 only
    *(Point("mamba1", d, layers, micro, seq, "fp32", mambapy=True)
      for d, layers, micro, seq in ((64, 1, 1, 32), (64, 2, 2, 32), (128, 2, 1, 48),
                                    (96, 3, 3, 24))),
)


# one point per kind of row (each arch and dtype, mambapy, checkpointing): what the slow
# test lane runs to show the benchmark still works, not a table to commit
QUICK_GRID: tuple[Point, ...] = (
    Point("mamba1", 64, 1, 1, 16, "fp32"),
    Point("mamba2", 64, 1, 1, 16, "bf16"),
    Point("mamba1", 64, 1, 1, 16, "fp32", mambapy=True),
    Point("mamba2", 64, 2, 1, 16, "fp32", checkpointing=True),
)


def spec_for(p: Point) -> ModelSpec:
    return ModelSpec(arch=p.arch, d_model=p.d_model, n_layer=p.n_layer, vocab_size=VOCAB,
                     pad_vocab_size_multiple=8, d_state=p.d_state, headdim=p.headdim,
                     chunk_size=p.chunk_size)


def build_model(p: Point):  # type: ignore[no-untyped-def]
    import torch
    from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM

    torch.manual_seed(0)
    m = spec_for(p)
    if p.arch == "mamba1":
        cfg = MambaConfig(vocab_size=VOCAB, hidden_size=m.d_model, num_hidden_layers=m.n_layer,
                          state_size=m.d_state, expand=m.expand, conv_kernel=m.d_conv,
                          use_mambapy=p.mambapy, tie_word_embeddings=True)
        model = MambaForCausalLM(cfg)
    else:
        e = m.expand * m.d_model
        cfg = Mamba2Config(vocab_size=VOCAB, hidden_size=m.d_model, num_hidden_layers=m.n_layer,
                           state_size=m.d_state, expand=m.expand, conv_kernel=m.d_conv,
                           head_dim=m.headdim, num_heads=e // m.headdim, n_groups=m.ngroups,
                           chunk_size=m.chunk_size, tie_word_embeddings=True)
        model = Mamba2ForCausalLM(cfg)
    dtype = torch.bfloat16 if p.dtype == "bf16" else torch.float32
    model = model.to(dtype).train()
    if p.checkpointing:
        from ds_wizard.train.recipe import enable_block_checkpointing

        enable_block_checkpointing(model)  # what ds_wizard.train does, for both backends
    return model


def measure(p: Point) -> int:
    """Bytes saved for backward by one forward + loss, deduplicated by storage."""
    import torch

    model = build_model(p)
    params = {t.untyped_storage().data_ptr() for t in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            storages[s.data_ptr()] = s.nbytes()
        return t

    ids = torch.randint(0, VOCAB, (p.micro, p.seq_len), generator=torch.Generator().manual_seed(1))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(input_ids=ids, labels=ids)
    # keep the graph (and so every saved storage) alive until counted
    total = sum(storages.values())
    del out
    return total


def predict(p: Point) -> int:
    return activations(spec_for(p), micro_batch=p.micro, seq_len=p.seq_len, precision=p.dtype,
                       backend="transformers", checkpointing=p.checkpointing,
                       mambapy=p.mambapy).saved


def rows(grid: tuple[Point, ...] = GRID) -> list[dict]:
    import logging

    # transformers warns once per kernel that it falls back to PyTorch: expected here
    logging.getLogger("transformers").setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    out = []
    for p in grid:
        measured, predicted = measure(p), predict(p)
        out.append({"point": p, "measured": measured, "predicted": predicted,
                    "error": predicted / measured - 1})
    return out


def markdown(table: list[dict]) -> str:
    lines = [
        "| arch | scan | d_model | state / head / chunk | layers | micro | seq_len | dtype | "
        "ckpt | measured (KiB) | estimate (KiB) | error |",
        "|---|---|---:|---|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    for r in table:
        p = r["point"]
        scan = ("mambapy" if p.mambapy else "loop") if p.arch == "mamba1" else "chunked"
        shape = (f"{p.d_state}" if p.arch == "mamba1"
                 else f"{p.d_state} / {p.headdim} / {p.chunk_size}")
        lines.append(
            f"| {p.arch} | {scan} | {p.d_model} | {shape} | {p.n_layer} | {p.micro} | "
            f"{p.seq_len} | {p.dtype} | {'on' if p.checkpointing else 'off'} | "
            f"{r['measured'] / 1024:,.1f} | {r['predicted'] / 1024:,.1f} | "
            f"{r['error'] * 100:+.1f}% |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="also write the markdown table here")
    ap.add_argument("--quick", action="store_true",
                    help=f"the {len(QUICK_GRID)}-point smoke grid instead of the full one")
    args = ap.parse_args(argv)
    text = markdown(rows(QUICK_GRID if args.quick else GRID))
    print(text, end="")
    if args.out:
        from ds_wizard.core.base.fsio import atomic_write_text

        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
