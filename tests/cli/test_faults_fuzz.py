"""Issue 15, fault 9: hypothesis over CLI numbers, ``--set`` values and preset batch values
finds no traceback in 2,000 examples: every outcome is success, a one-line ``error:``
(exit 1) or a usage error (exit 2).

In-process through click's CliRunner so each example costs milliseconds. The profile is
registered here and pinned to 2,000 examples without a deadline, so CI runs the full
count; ``HYPOTHESIS_PROFILE_FAULTS=faults-quick`` trims it for a local edit-test loop.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes import NO_GPU, patch_gpus
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ds_wizard.cli import main
from ds_wizard.core.base.errors import ExitCode

settings.register_profile(
    "faults", max_examples=2000, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "faults-quick", max_examples=100, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE_FAULTS", "faults"))

# number-ish text: digits, signs, exponents, separators, Unicode digits that str.isdigit()
# or int() accept, NaN/Infinity spellings and runs of digits far past any limit
_ODD = ["²", "³", "٣", "१", "①", "½", "_", "e", "E", "^", "x", ".", "-", "+", " ", ",", "\x00"]
number_text = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e30", "10^12", "0x10",
                     "1_000", "", " ", "9" * 5000, "0" * 50 + "1", "²", "1e-400"]),
    st.text(alphabet=list(string.digits) + _ODD, max_size=24),
)
gpu_list = st.lists(number_text, min_size=1, max_size=4).map(",".join)

_leaf = st.one_of(number_text, st.booleans().map(str).map(str.lower),
                  st.text(max_size=8).map(lambda s: '"' + s.replace('"', "") + '"'))
toml_value = st.recursive(
    _leaf, lambda inner: st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
    max_leaves=6,
)
deep_value = st.integers(min_value=1, max_value=6000).map(lambda n: "[" * n + "]" * n)
SET_KEYS = ["batch.micro_batch", "batch.global_batch", "train.lr", "train.betas",
            "train.grad_clip", "model.n_layer", "batch.by_world_size.2.micro_batch",
            "deepspeed.zero_stage"]
set_item = st.one_of(
    st.tuples(st.sampled_from(SET_KEYS), st.one_of(toml_value, deep_value)).map("=".join),
    number_text.map(lambda n: f"batch.by_world_size.{n}.micro_batch=1"),
)

PRESET = ('schema_version = 2\ndescription = "fuzz"\n[model]\nd_model = 64\nn_layer = 2\n'
          'vocab_size = 256\n[train]\nseq_len = 64\nwarmup_steps = 1\ntotal_steps = 10\n')


def preset_text(global_batch: str, micro: str, pinned_key: str) -> str:
    return (PRESET + f"[batch]\nglobal_batch = {global_batch}\nmicro_batch = {micro}\n"
            f'[batch.by_world_size."{pinned_key}"]\nglobal_batch = 8\nmicro_batch = 1\n')


case = st.one_of(
    st.tuples(st.just("gpus"), gpu_list),
    st.tuples(st.just("auto"), st.tuples(
        st.sampled_from(["--num-gpus", "--global-batch", "--micro-batch", "--grad-accum",
                         "--headroom", "--zero-stage"]), number_text)),
    st.tuples(st.just("set"), set_item),
    st.tuples(st.just("preset"), st.tuples(st.one_of(toml_value, number_text.map(repr)),
                                           toml_value, number_text)),
)


@pytest.fixture
def runner(home: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    patch_gpus(monkeypatch, NO_GPU)
    return CliRunner()


@PROFILE
@given(case)
@example(("gpus", "²"))
@example(("gpus", "1e30"))
@example(("auto", ("--global-batch", "10^12")))
@example(("auto", ("--micro-batch", "1000000000000")))
@example(("auto", ("--headroom", "nan")))
@example(("set", "train.betas=" + "[" * 5000 + "]" * 5000))
@example(("set", "batch.micro_batch=" + "1" * 5000))
@example(("preset", ('"²"', "1", "2")))
@example(("preset", ('"' + "1" * 5000 + '"', "1", "2")))
@example(("preset", ("nan", "inf", "2")))
def test_no_traceback_from_numbers_anywhere(runner: CliRunner, tmp_path: Path, case) -> None:
    kind, value = case
    if kind == "gpus":
        args = ["presets", "show", "tiny_mamba", "--gpus", value]
    elif kind == "auto":
        option, number = value
        args = ["--auto", "--preset", "tiny_mamba", "--dry-run", option, number]
        if option != "--num-gpus":
            args += ["--num-gpus", "2"]
    elif kind == "set":
        args = ["presets", "show", "tiny_mamba", "--gpus", "2", "--set", value]
    else:
        path = Path.cwd() / "fuzz.toml"
        path.write_text(preset_text(*value), encoding="utf-8")
        args = ["--auto", "--preset", str(path), "--num-gpus", "2", "--dry-run"]
    result = runner.invoke(main, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        args, repr(result.exception))
    assert result.exit_code in (ExitCode.OK, ExitCode.PROBLEM, ExitCode.USAGE), args
    assert "Traceback" not in result.output
    if result.exit_code != ExitCode.OK:
        errors = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(errors) == 1 and errors[0].startswith("error: "), (args, result.stderr)
