"""What a rank does with the launch side's decisions (issue 19), pinned on the CPU:
torch's fused AdamW as DeepSpeed's client optimizer, the planned backend or a clear stop
(never a silent fallback), and exports as CPU tensors at every ZeRO stage."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ds_wizard.core.runs.doctor import (
    OPT_DEEPSPEED_CPU,
    OPT_DEEPSPEED_FUSED,
    OPT_TORCH_FUSED,
    Toolkit,
    decide_optimizer,
)
from ds_wizard.train.optim import adamw_kwargs, client_optimizer

ROOT = Path(__file__).resolve().parents[2]
ADAMW = {"type": "AdamW", "params": {"lr": 3e-4, "betas": [0.9, 0.95], "eps": 1e-8,
                                     "weight_decay": 0.1}}
NO_NVCC = Toolkit(torch_cuda="12.4", nvcc=None, nvcc_version=None, cuda_home=None,
                  cxx="/usr/bin/c++", ninja=True)


def test_without_a_toolkit_gpu_ranks_get_torchs_fused_adamw() -> None:
    cfg = {"optimizer": ADAMW, "zero_optimization": {"stage": 2}}
    built = decide_optimizer(cfg, cuda=True, toolkit=NO_NVCC, user_config=False)
    assert built.name == OPT_TORCH_FUSED and built.check.status == "ok"
    assert "no nvcc" in built.check.detail
    # the user's own config asked for DeepSpeed's FusedAdam: refused with the fix
    theirs = decide_optimizer(cfg, cuda=True, toolkit=NO_NVCC, user_config=True)
    assert theirs.name == OPT_DEEPSPEED_FUSED and theirs.check.status == "fail"
    # a working toolkit, or a prebuilt op: DeepSpeed's own FusedAdam
    good = Toolkit("12.4", "/cuda/bin/nvcc", "12.6", "/cuda", "/usr/bin/c++", True)
    assert decide_optimizer(cfg, cuda=True, toolkit=good, user_config=False).name == \
        OPT_DEEPSPEED_FUSED
    prebuilt = Toolkit("12.4", None, None, None, None, False, prebuilt={"fused_adam": True})
    assert decide_optimizer(cfg, cuda=True, toolkit=prebuilt, user_config=True).name == \
        OPT_DEEPSPEED_FUSED
    offload = {**cfg, "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}
    assert decide_optimizer(offload, cuda=True, toolkit=NO_NVCC, user_config=False).name == \
        OPT_DEEPSPEED_CPU


def test_the_client_optimizer_is_fused_adamw_with_the_configs_settings() -> None:
    model = torch.nn.Linear(4, 3)
    groups = [{"params": [model.weight]}, {"params": [model.bias], "weight_decay": 0.0}]
    cfg = {"optimizer": ADAMW, "train_batch_size": 4}
    ds_cfg, opt = client_optimizer(OPT_TORCH_FUSED, cfg, groups)
    assert "optimizer" not in ds_cfg and ds_cfg["train_batch_size"] == 4
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"] is True
    assert adamw_kwargs(cfg) == {"lr": 3e-4, "betas": (0.9, 0.95), "eps": 1e-8,
                                 "weight_decay": 0.1}
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    before = model.weight.detach().clone()
    model(torch.ones(2, 4)).sum().backward()
    opt.step()  # torch's fused AdamW runs on the CPU too (torch >= 2.4)
    assert not torch.equal(before, model.weight)
    # any other decision leaves the config to DeepSpeed
    assert client_optimizer(OPT_DEEPSPEED_FUSED, cfg, groups) == (cfg, None)


RANK = """
import sys
from ds_wizard.train.kernels import PlannedBackendUnavailable, planned_backend, verify
from ds_wizard.train.model import BackendError, choose_backend
wanted = planned_backend(sys.argv[1], "auto", True)
try:
    chosen = choose_backend(wanted, cuda=True, arch="mamba2", capability=(9, 0))
    verify(chosen.name, "mamba2")
except (BackendError, PlannedBackendUnavailable) as exc:
    print("STOP", exc.one_line())
    sys.exit(1)
print("RUNS", chosen.name)
"""


def _site(tmp: Path, scan: str, binding: str) -> Path:
    files = {
        "mamba_ssm/__init__.py": "",
        "mamba_ssm/models/__init__.py": "",
        "mamba_ssm/models/mixer_seq_simple.py": "class MambaLMHeadModel: pass\n",
        "mamba_ssm/ops/__init__.py": "",
        "mamba_ssm/ops/triton/__init__.py": "",
        "mamba_ssm/ops/triton/ssd_combined.py": f"causal_conv1d_fwd_function = {binding}\n",
        "selective_scan_cuda.py": scan,
        "triton/__init__.py": "",
    }
    for rel, text in files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(textwrap.dedent(text))
    return tmp


@pytest.mark.parametrize(("scan", "binding", "planned", "want"), [
    ("raise ImportError('undefined symbol: _ZN3c10')\n", "print", "mamba_ssm",
     "STOP mamba-ssm's CUDA extension selective_scan_cuda does not import (ImportError: "
     "undefined symbol"),
    ("", "None", "mamba_ssm", "STOP mamba_ssm was planned but its causal-conv1d functions "
                              "are None (causal_conv1d_fwd_function)"),
    ("", "print", "mamba_ssm", "RUNS mamba_ssm"),
    ("raise ImportError('undefined symbol: _ZN3c10')\n", "print", "transformers",
     "RUNS transformers"),
])
def test_a_rank_runs_the_planned_backend_or_stops(tmp_path: Path, scan: str, binding: str,
                                                  planned: str, want: str) -> None:
    site = _site(tmp_path, scan, binding)
    done = subprocess.run([sys.executable, "-c", RANK, planned], capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}"})
    out = done.stdout.strip().splitlines()[-1]
    assert out.startswith(want), out
    assert done.returncode == (1 if want.startswith("STOP") else 0)


def test_exports_hold_cpu_tensors_and_keep_ties(tmp_path: Path) -> None:
    """ZeRO 0-2 export of a mamba_ssm module: written from a CPU copy of its state dict,
    not by mamba's save_pretrained (which would pickle CUDA tensors on a GPU)."""
    from dataclasses import dataclass

    from ds_wizard.train.model import cpu_state_dict, export_pretrained

    @dataclass
    class Cfg:
        d_model: int = 4

    class Module(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = torch.nn.Embedding(8, 4)
            self.lm_head = torch.nn.Linear(4, 8, bias=False)
            self.lm_head.weight = self.embedding.weight
            self.config = Cfg()

        def save_pretrained(self, *a: object) -> None:
            raise AssertionError("the module's own save_pretrained keeps device tensors")

    module = Module()
    export_pretrained(module, "mamba_ssm", tmp_path / "final")
    loaded = torch.load(tmp_path / "final" / "pytorch_model.bin", weights_only=True)
    assert {t.device.type for t in loaded.values()} == {"cpu"}
    assert loaded["embedding.weight"].data_ptr() == loaded["lm_head.weight"].data_ptr()
    state = cpu_state_dict(module.state_dict())
    assert state["embedding.weight"] is state["lm_head.weight"]
