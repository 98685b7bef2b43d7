"""Which kernels run (issue 11): one rule, core.runspec.resolve_backend, for the planner
(plan, --auto, launch) and the rank (train.model.choose_backend, which imports them)."""

from __future__ import annotations

import json
import re
import sys

import pytest
from click.testing import CliRunner
from fakes import FOUR_A100, NO_GPU, TWO_V100, patch_gpus

from ds_wizard.cli import main
from ds_wizard.core.plan.backends import resolve_backend

ALL = {"mamba_ssm", "selective_scan_cuda", "triton", "causal_conv1d"}


def having(*modules: str):
    return lambda m: m in modules


@pytest.mark.parametrize(("arch", "installed", "name", "words"), [
    ("mamba2", ALL, "mamba_ssm", "with causal-conv1d"),
    ("mamba2", ALL - {"causal_conv1d"}, "mamba_ssm", "PyTorch causal conv stands in"),
    ("mamba2", ALL - {"triton"}, "transformers", "triton not installed"),
    ("mamba2", ALL - {"mamba_ssm"}, "transformers", "mamba-ssm not installed"),
    ("mamba1", ALL - {"selective_scan_cuda"}, "transformers", "selective_scan_cuda not installed"),
    ("mamba1", ALL - {"triton"}, "mamba_ssm", "with causal-conv1d"),
    ("mamba1", set(), "transformers", "mamba-ssm, mamba-ssm's CUDA extension"),
])
def test_auto_names_what_is_missing(arch, installed, name, words) -> None:
    d = resolve_backend("auto", cuda=True, arch=arch, found=having(*installed),
                        compute_capability=(9, 0))
    assert d.name == name and words in d.reason
    assert d.conv_fallback == (name == "mamba_ssm" and "causal_conv1d" not in installed)
    if name == "transformers":
        assert "--no-build-isolation" in d.reason  # the fix is in the message


def test_old_gpus_and_cpu_and_other_machines() -> None:
    assert resolve_backend("auto", cuda=True, arch="mamba2", found=having(*ALL),
                           compute_capability=(7, 0)).name == "transformers"
    assert resolve_backend("auto", cuda=False, arch="mamba2",
                           found=having(*ALL)).name == "transformers"
    # planning on a laptop for a GPU node: the node's kernels are assumed
    far = resolve_backend("auto", cuda=True, arch="mamba2", here=False, found=having())
    assert far.name == "mamba_ssm" and "planning for a GPU machine" in far.reason
    assert resolve_backend("transformers", cuda=True, arch="mamba2",
                           found=having(*ALL)).name == "transformers"


def _batch(output: str) -> str:
    return re.search(r"✅ Config validated: (\d+ = \d+ × \d+ × \d+)", output).group(1)


def test_auto_and_launch_plan_with_the_backend_that_will_run(monkeypatch, tmp_path) -> None:
    """GPUs here and no mamba-ssm here: a launch would run transformers' path, so --auto
    and launch both size the batch with its memory, and say so."""
    patch_gpus(monkeypatch, FOUR_A100, kernels=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    common = ["--preset", "mamba2_1.3b", "--num-gpus", "4", "--dry-run"]
    auto = runner.invoke(main, ["--auto", *common])
    launch = runner.invoke(main, ["launch", *common])
    assert auto.exit_code == 0 and launch.exit_code == 0, (auto.output, launch.output)
    assert "memory planned for backend transformers: mamba-ssm" in auto.output
    assert "backend transformers: mamba-ssm" in launch.output
    assert _batch(auto.output) == _batch(launch.output)
    kernels = runner.invoke(main, ["--auto", *common, "--backend", "mamba_ssm", "--json"])
    plain = runner.invoke(main, ["--auto", *common, "--json"])
    # the fused kernels keep fewer activations: the same GPUs take a larger micro-batch
    key = "train_micro_batch_size_per_gpu"
    assert (json.loads(kernels.output)[key]
            > json.loads(plain.output)[key]), (kernels.output, plain.output)
    assert json.loads(plain.output)["memory"]["settings"]["backend"] == "transformers"


def test_plan_reports_the_backend_and_why(monkeypatch) -> None:
    patch_gpus(monkeypatch, TWO_V100)
    out = CliRunner().invoke(main, ["plan", "--preset", "mamba2_130m", "--num-gpus", "2",
                                    "--json"])
    data = json.loads(out.output)
    assert data["estimate"]["settings"]["backend"] == "transformers"
    assert "compute capability 7.0" in data["backend_reason"]
    patch_gpus(monkeypatch, NO_GPU)
    out = CliRunner().invoke(main, ["plan", "--preset", "mamba2_130m", "--num-gpus", "2",
                                    "--gpu-memory", "80GiB"])
    assert "backend mamba_ssm: planning for a GPU machine" in out.output


# -- the rank: imports what will run ---------------------------------------------------------

@pytest.fixture
def rank_imports(monkeypatch):
    from ds_wizard.train import model

    def install(*importable: str) -> None:
        def fake(module: str, errors: dict[str, str]) -> bool:
            if module in importable:
                return True
            errors[module] = f"ModuleNotFoundError: No module named '{module}'"
            return False
        monkeypatch.setattr(model, "_try_import", fake)
        for name in ("causal_conv1d", "causal_conv1d.cpp_functions"):
            monkeypatch.delitem(sys.modules, name, raising=False)
        monkeypatch.setattr(model.causal_conv1d_fallback.importlib.util, "find_spec",
                            lambda name: None)
    return install


def test_rank_uses_the_conv_stand_in_without_causal_conv1d(rank_imports) -> None:
    from ds_wizard.train import causal_conv1d_fallback
    from ds_wizard.train.model import choose_backend

    rank_imports("mamba_ssm", "selective_scan_cuda", "triton")
    choice = choose_backend("auto", cuda=True, arch="mamba2", capability=(9, 0))
    assert choice.name == "mamba_ssm" and choice.conv_fallback
    assert "causal-conv1d is not installed" in choice.reason
    assert choice.reason.count("stands in") == 1
    assert "No module named 'causal_conv1d'" in choice.reason
    from causal_conv1d.cpp_functions import causal_conv1d_fwd_function

    assert causal_conv1d_fwd_function is causal_conv1d_fallback.causal_conv1d_fwd_function


def test_rank_falls_back_naming_the_missing_package(rank_imports) -> None:
    from ds_wizard.train.model import BackendError, choose_backend

    rank_imports("mamba_ssm", "triton")
    choice = choose_backend("auto", cuda=True, arch="mamba1", capability=(9, 0))
    assert choice.name == "transformers"
    assert "selective_scan_cuda" in choice.reason and "No module named" in choice.reason
    assert "causal_conv1d" not in sys.modules  # the stand-in is taken back out
    with pytest.raises(BackendError, match="selective_scan_cuda does not import"):
        choose_backend("mamba_ssm", cuda=True, arch="mamba1", capability=(9, 0))


def test_a_broken_causal_conv1d_is_replaced_too(rank_imports, monkeypatch) -> None:
    """Installed but built against another torch: the import fails, the stand-in goes in."""
    from ds_wizard.train import model
    from ds_wizard.train.model import choose_backend

    rank_imports("mamba_ssm", "selective_scan_cuda", "triton")
    monkeypatch.setattr(model.causal_conv1d_fallback.importlib.util, "find_spec",
                        lambda name: object())  # on disk
    choice = choose_backend("mamba_ssm", cuda=True, arch="mamba2", capability=(9, 0))
    assert choice.conv_fallback and "stands in for causal-conv1d" in choice.reason
    assert sys.modules["causal_conv1d"].__ds_wizard_fallback__
