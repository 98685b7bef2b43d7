"""Fixtures every test module shares."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes import NO_GPU, TRAINED_STEPS, isolate, patch_gpus, train_tiny_mamba

from ds_wizard.core.plan.measured import ENV_DATA_DIR
from ds_wizard.core.presets.lookup import ENV_CONFIG_DIR, ENV_PRESET_PATH
from ds_wizard.core.presets.spec_cache import ENV_CACHE_DIR, ENV_NO_CACHE


@pytest.fixture(autouse=True, scope="session")
def _private_validation_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # os.environ (MonkeyPatch sets the real one): subprocesses (the CLI, deepspeed ranks)
    # inherit it, and the user's real ~/.cache stays untouched by the suite.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV_CACHE_DIR, str(tmp_path_factory.mktemp("cache")))
        # `tune`'s measured record: never the user's, so no plan in a test changes with it
        mp.setenv(ENV_DATA_DIR, str(tmp_path_factory.mktemp("data")))
        mp.delenv(ENV_NO_CACHE, raising=False)
        yield


@pytest.fixture(autouse=True, scope="session")
def _same_terminal_everywhere() -> Iterator[None]:
    """The tester's terminal must not matter: rich and click read the width from COLUMNS
    (subprocesses too), and a forced colour would put escapes into compared output."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COLUMNS", "80")
        mp.setenv("LINES", "24")
        for key in ("FORCE_COLOR", "TTY_COMPATIBLE"):
            mp.delenv(key, raising=False)
        yield


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory (cwd) and user config dir, with no team preset path."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv(ENV_PRESET_PATH, raising=False)
    monkeypatch.setenv(ENV_CONFIG_DIR, str(tmp_path / "config"))
    return tmp_path


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """click's runner on a machine with no GPU (every detect_gpus returns NO_GPU)."""
    patch_gpus(monkeypatch, NO_GPU)
    return CliRunner()


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated working directory (cwd): only the built-in presets are visible."""
    return isolate(tmp_path, monkeypatch)


@pytest.fixture(autouse=True)
def _no_causal_conv1d_stand_in_left_behind() -> Iterator[None]:
    """ds-wizard's causal-conv1d stand-in registers itself in sys.modules; a later test
    (transformers' Mamba path asks for causal_conv1d) must not find it."""
    before = {n: m for n, m in sys.modules.items() if n.split(".")[0] == "causal_conv1d"}
    yield
    for name in [n for n in sys.modules if n.split(".")[0] == "causal_conv1d"]:
        del sys.modules[name]
    sys.modules.update(before)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, int]:
    """One real 30-step tiny_mamba run on 2 CPU ranks, shared by every slow test that only
    reads it (a test that changes a run works on ``fakes.copy_run`` of it)."""
    return train_tiny_mamba(tmp_path_factory.mktemp("trained"), TRAINED_STEPS, timeout=1200)
