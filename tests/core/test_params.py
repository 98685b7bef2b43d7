"""Closed-form Mamba parameter counts against the real model classes on the meta device."""

from __future__ import annotations

import pytest
import torch
import transformers

from ds_wizard.core.plan.params import count_params
from ds_wizard.core.presets.lookup import builtin_dir, read_preset_file
from ds_wizard.core.presets.schema import ModelSpec

BUILTIN = sorted(builtin_dir().glob("*.toml"))


def hf_count(spec: ModelSpec) -> int:
    """numel of transformers' Mamba(2)ForCausalLM for ``spec``, built without memory.

    The config is the one training builds (``train.model.transformers_config``), so this
    checks the closed form and the spec → transformers mapping the ranks use.
    """
    from ds_wizard.train.model import transformers_config

    cls = transformers.Mamba2ForCausalLM if spec.arch == "mamba2" else transformers.MambaForCausalLM
    with torch.device("meta"):
        model = cls(transformers_config(spec))
    # parameters() yields a tied weight once, as the closed form counts it
    return sum(p.numel() for p in model.parameters())


def test_seven_b_is_exact():
    spec = ModelSpec(arch="mamba1", d_model=4096, n_layer=64, vocab_size=50280,
                     pad_vocab_size_multiple=8, d_state=16, expand=2, d_conv=4)
    assert count_params(spec) == 6_945_935_360
    assert hf_count(spec) == 6_945_935_360


@pytest.mark.parametrize("path", BUILTIN, ids=[p.stem for p in BUILTIN])
def test_every_shipped_preset_matches_transformers(path):
    spec = read_preset_file(path).spec.model
    assert count_params(spec) == hf_count(spec)


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec(arch="mamba1", d_model=320, n_layer=3, vocab_size=1001,
                  pad_vocab_size_multiple=16, tie_embeddings=False),
        ModelSpec(arch="mamba1", d_model=200, n_layer=2, vocab_size=997,
                  pad_vocab_size_multiple=1, d_state=8, d_conv=3, expand=3, bias=True),
        ModelSpec(arch="mamba1", d_model=100, n_layer=1, vocab_size=50,
                  pad_vocab_size_multiple=64, conv_bias=False),
        ModelSpec(arch="mamba2", d_model=256, n_layer=2, vocab_size=1000,
                  pad_vocab_size_multiple=8, headdim=32, ngroups=2, tie_embeddings=False),
        ModelSpec(arch="mamba2", d_model=192, n_layer=3, vocab_size=777,
                  pad_vocab_size_multiple=16, d_state=64, headdim=64, expand=2, bias=True),
        ModelSpec(arch="mamba2", d_model=768, n_layer=24, vocab_size=50277,
                  pad_vocab_size_multiple=16),
    ],
    ids=["m1-untied-pad16", "m1-bias-odd", "m1-nobias-pad64", "m2-untied-groups",
         "m2-bias", "m2-130m"],
)
def test_random_configs_match_transformers(spec):
    assert count_params(spec) == hf_count(spec)


def test_mamba2_130m_reference():
    spec = ModelSpec(arch="mamba2", d_model=768, n_layer=24, vocab_size=50288,
                     pad_vocab_size_multiple=16)
    assert count_params(spec) == 128_989_632


def test_mamba_ssm_class_when_available():
    mamba_ssm = pytest.importorskip("mamba_ssm.models.mixer_seq_simple")
    from mamba_ssm.models.config_mamba import MambaConfig

    cfg = MambaConfig(d_model=4096, n_layer=64, vocab_size=50277, pad_vocab_size_multiple=8)
    with torch.device("meta"):
        model = mamba_ssm.MambaLMHeadModel(cfg, device="meta")
    assert sum(p.numel() for p in model.parameters()) == 6_945_935_360
