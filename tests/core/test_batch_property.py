"""core.batch.resolve agrees with DeepSpeed's own parser on random triplets."""

from __future__ import annotations

import deepspeed  # noqa: F401  (a hard dependency: a broken install must fail, not skip)
from _ds_oracle import deepspeed_verdict
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ds_wizard.core.batch.batchmath import resolve

value = st.one_of(
    st.none(),
    st.integers(min_value=-8, max_value=300),
    st.sampled_from([0, 1, 2, 3, 4, 8, 16, 32, 64, 100, 128, 256, 1024]),
)
world = st.one_of(st.integers(min_value=1, max_value=64), st.sampled_from([1, 2, 3, 4, 7, 8, 16]))


def _config(t, m, g) -> dict:
    keys = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")
    return {k: v for k, v in zip(keys, (t, m, g), strict=True) if v is not None}


@settings(max_examples=500, deadline=None)
@given(t=value, m=value, g=value, ws=world)
@example(t=16, m=4, g=8, ws=4)        # the source document's failure: 16 != 4 * 8 * 4
@example(t=128, m=4, g=8, ws=4)       # its fix
@example(t=16, m=3, g=None, ws=4)     # gas floors to 1: 16 != 3 * 1 * 4
@example(t=100, m=None, g=3, ws=4)    # micro floors to 8: 100 != 8 * 3 * 4
@example(t=8, m=None, g=1, ws=16)     # micro floors to 0
@example(t=8, m=None, g=None, ws=16)  # train only: micro 8 // 16 = 0
@example(t=None, m=None, g=None, ws=4)  # nothing given
@example(t=None, m=None, g=8, ws=4)   # only gas: the "Either ..." assertion
@example(t=None, m=4, g=None, ws=4)   # micro only
@example(t=None, m=4, g=8, ws=4)      # micro + gas
@example(t=0, m=4, g=8, ws=4)         # zero
@example(t=16, m=0, g=None, ws=4)     # division by a zero micro-batch
@example(t=16, m=None, g=0, ws=4)     # division by zero accumulation
@example(t=-16, m=4, g=None, ws=4)    # negative global
@example(t=None, m=-4, g=8, ws=4)     # negative micro
@example(t=128, m=4, g=-8, ws=4)      # negative accumulation, all given
@example(t=7, m=None, g=None, ws=7)   # 7 GPUs
def test_resolve_matches_deepspeed(t, m, g, ws):
    ours = resolve(t, m, g, ws)
    theirs = deepspeed_verdict(_config(t, m, g), ws)
    assert ours.valid == theirs.valid, (ours, theirs)
    if theirs.valid:
        assert (ours.train_batch_size, ours.micro_batch, ours.grad_accum) == theirs.triplet
    else:
        assert ours.error_type == theirs.error_type
        assert ours.error == theirs.message


def test_oracle_reproduces_the_seed_message():
    verdict = deepspeed_verdict(_config(16, 4, 8), 4)
    assert verdict.error_type == "AssertionError"
    assert verdict.message.endswith("16 != 4 * 8 * 4")
