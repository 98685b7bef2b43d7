"""ds-wizard's training recipe on the model: one checkpoint per Mamba block (both backends'
block shapes) that saves what the memory model says, and the weight-decay groups."""

from __future__ import annotations

import pytest
import torch

from ds_wizard.core.plan.memory import activations
from ds_wizard.core.presets.schema import ModelSpec
from ds_wizard.train.recipe import enable_block_checkpointing, weight_decay_groups

VOCAB = 256


def _spec(arch: str) -> ModelSpec:
    extra = {"d_state": 16, "headdim": 16, "chunk_size": 16} if arch == "mamba2" else {}
    return ModelSpec(arch=arch, d_model=64, n_layer=3, vocab_size=VOCAB,
                     pad_vocab_size_multiple=8, **extra)


def _model(arch: str) -> torch.nn.Module:
    from ds_wizard.train.model import build_model

    torch.manual_seed(0)
    return build_model(_spec(arch), "transformers").train()


def _saved_bytes(fn, *, exclude: set[int]) -> int:
    """Bytes autograd keeps for backward during ``fn()``, deduplicated by storage."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in exclude:
            storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    total = sum(storages.values())
    del out
    return total


@pytest.mark.parametrize("arch", ["mamba1", "mamba2"])
def test_checkpointing_lowers_a_blocks_saved_bytes_by_the_factor_the_memory_model_claims(
        arch: str) -> None:
    micro, seq = 2, 32
    spec = _spec(arch)
    model = _model(arch)
    block = model.backbone.layers[1]
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    # a block input as the run sees it: the fp32 residual stream, requiring grad
    x = torch.randn(micro, seq, spec.d_model, requires_grad=True)
    plain = _saved_bytes(lambda: block(x), exclude=params)
    enable_block_checkpointing(model)
    kept = _saved_bytes(lambda: block(x), exclude=params)
    from ds_wizard.train.model import mambapy_available

    # build_model switches mambapy's parallel scan on when installed, as the run does
    scan = {"mambapy": mambapy_available() and arch == "mamba1"}
    est_off = activations(spec, micro_batch=micro, seq_len=seq, precision="fp32",
                          backend="transformers", checkpointing=False, **scan)
    est_on = activations(spec, micro_batch=micro, seq_len=seq, precision="fp32",
                         backend="transformers", checkpointing=True, **scan)
    # the memory model: a block costs per_layer without, its input with checkpointing
    claimed_kept = (est_on.layers - est_on.per_layer
                    - micro * seq * spec.d_model * 4) // (spec.n_layer - 1)
    claimed = est_off.per_layer / claimed_kept
    measured = plain / kept
    assert kept == micro * seq * spec.d_model * 4  # only the block's fp32 input stays
    assert measured == pytest.approx(claimed, rel=0.15), (plain, kept, claimed)
    assert measured > 10


@pytest.mark.parametrize("arch", ["mamba1", "mamba2"])
def test_checkpointed_model_gives_the_same_loss_and_gradients(arch: str) -> None:
    ids = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(3))
    results = []
    for ckpt in (False, True):
        model = _model(arch)
        if ckpt:
            assert enable_block_checkpointing(model) == 3
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (l0, g0), (l1, g1) = results
    assert torch.equal(l0, l1)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g0, g1, strict=True))


class _SsmLikeBlock(torch.nn.Module):
    """mamba_ssm's Block contract: (hidden_states, residual=None, inference_params=None)
    → (hidden_states, residual), residual in fp32."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(d)
        self.mixer = torch.nn.Sequential(torch.nn.Linear(d, 4 * d), torch.nn.GELU(),
                                         torch.nn.Linear(4 * d, d))

    def forward(self, hidden_states, residual=None, inference_params=None):  # type: ignore[no-untyped-def]
        residual = hidden_states if residual is None else residual + hidden_states
        return self.mixer(self.norm(residual)), residual.float()


class _SsmLikeModel(torch.nn.Module):
    def __init__(self, d: int = 32, layers: int = 3) -> None:
        super().__init__()
        self.backbone = torch.nn.Module()
        self.backbone.layers = torch.nn.ModuleList(_SsmLikeBlock(d) for _ in range(layers))

    def forward(self, x):  # type: ignore[no-untyped-def]
        hidden, residual = x, None
        for layer in self.backbone.layers:
            hidden, residual = layer(hidden, residual, inference_params=None)
        return (hidden + residual).sum()


def test_mamba_ssm_style_blocks_are_checkpointed_the_same_way() -> None:
    torch.manual_seed(0)
    model = _SsmLikeModel()
    x = torch.randn(2, 8, 32, requires_grad=True)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    plain = _saved_bytes(lambda: model(x), exclude=params)
    ref = torch.autograd.grad(model(x), x)[0]
    assert enable_block_checkpointing(model) == 3
    kept = _saved_bytes(lambda: model(x), exclude=params)
    got = torch.autograd.grad(model(x), x)[0]
    assert torch.allclose(ref, got)
    assert kept < plain / 4
    model.eval()  # no checkpoint outside training: nothing to re-run
    with torch.no_grad():
        model(x)


def _names(model: torch.nn.Module, group: dict) -> set[str]:
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


@pytest.mark.parametrize("arch", ["mamba1", "mamba2"])
def test_weight_decay_groups_exclude_the_no_weight_decay_parameters(arch: str) -> None:
    model = _model(arch)
    decay, no_decay = weight_decay_groups(model)
    assert "weight_decay" not in decay  # the DeepSpeed config's value applies
    assert no_decay["weight_decay"] == 0.0
    d_names, n_names = _names(model, decay), _names(model, no_decay)
    assert not d_names & n_names
    all_ids = {id(p) for p in model.parameters()}
    assert {id(p) for g in (decay, no_decay) for p in g["params"]} == all_ids
    leaf = {n.rsplit(".", 1)[-1] for n in n_names}
    assert {"A_log", "D"} <= leaf
    assert ("dt_bias" if arch == "mamba2" else "bias") in leaf
    assert all(n.rsplit(".", 1)[-1] not in {"A_log", "D", "dt_bias", "bias"} for n in d_names)
    assert not any("norm" in n for n in d_names)
    assert "backbone.embeddings.weight" in n_names  # tied: the LM head too
    assert any(n.endswith("in_proj.weight") for n in d_names)
    assert any(n.endswith("out_proj.weight") for n in d_names)


def test_the_no_weight_decay_attribute_is_honoured_whatever_the_name() -> None:
    model = _SsmLikeModel()
    marked = model.backbone.layers[0].mixer[0].weight
    marked._no_weight_decay = True  # what mamba_ssm sets on A_log, D and dt_bias
    decay, no_decay = weight_decay_groups(model)
    assert any(p is marked for p in no_decay["params"])
    assert not any(p is marked for p in decay["params"])


def test_a_gathered_mamba_ssm_state_dict_is_written_in_mamba_ssms_own_format(
        tmp_path) -> None:  # type: ignore[no-untyped-def]
    """ZeRO-3 export of a mamba_ssm run: what MambaLMHeadModel.save_pretrained writes
    (config.json from its config dataclass, pytorch_model.bin), from the gathered dict."""
    import json
    from dataclasses import dataclass, field

    from ds_wizard.train.model import export_pretrained

    @dataclass
    class MambaConfigLike:
        d_model: int = 8
        n_layer: int = 1
        ssm_cfg: dict = field(default_factory=lambda: {"layer": "Mamba2"})

    module = torch.nn.Module()
    module.config = MambaConfigLike()
    emb = torch.randn(16, 8, dtype=torch.bfloat16)
    state = {"backbone.embedding.weight": emb, "lm_head.weight": emb,
             "backbone.layers.0.mixer.A_log": torch.zeros(4)}
    out = tmp_path / "final"
    export_pretrained(module, "mamba_ssm", out, state_dict=state)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "pytorch_model.bin"]
    assert json.loads((out / "config.json").read_text()) == {
        "d_model": 8, "n_layer": 1, "ssm_cfg": {"layer": "Mamba2"}}
    loaded = torch.load(out / "pytorch_model.bin", weights_only=True)
    assert loaded.keys() == state.keys()
    assert torch.equal(loaded["lm_head.weight"], emb)
    # the tie survives: one tensor, as MambaLMHeadModel.load_state_dict expects
    assert loaded["lm_head.weight"].data_ptr() == loaded["backbone.embedding.weight"].data_ptr()
