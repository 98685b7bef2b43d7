"""Each rank owns the device its LOCAL_RANK names, and selects it before the model exists."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ds_wizard.train.device import DeviceError, local_rank, select_device

ROOT = Path(__file__).resolve().parents[2]


class FakeAccelerator:
    """Records calls; ``name`` is what DeepSpeed's accelerator reports (cuda, cpu)."""

    def __init__(self, name: str = "cuda", count: int = 4) -> None:
        self.name, self.count, self.calls = name, count, []

    def device_name(self, index: int | None = None) -> str:
        return self.name if index is None or self.name == "cpu" else f"{self.name}:{index}"

    def device_count(self) -> int:
        return self.count

    def set_device(self, index: int) -> None:
        self.calls.append(index)


@pytest.mark.parametrize("rank", [0, 1, 3])
def test_every_rank_selects_the_device_its_local_rank_names(rank: int) -> None:
    accel = FakeAccelerator()
    assert select_device(accel, {"LOCAL_RANK": str(rank)}) == f"cuda:{rank}"
    assert accel.calls == [rank]


def test_a_local_rank_beyond_the_visible_devices_is_refused() -> None:
    accel = FakeAccelerator(count=2)
    with pytest.raises(DeviceError, match="LOCAL_RANK 2 but only 2 cuda"):
        select_device(accel, {"LOCAL_RANK": "2"})
    assert accel.calls == []


def test_cpu_ranks_take_the_same_path() -> None:
    accel = FakeAccelerator("cpu", count=1)
    assert select_device(accel, {"LOCAL_RANK": "1"}) == "cpu"
    assert accel.calls == [1]


def test_local_rank_comes_from_the_environment_then_the_argument() -> None:
    assert local_rank({"LOCAL_RANK": "2"}, fallback=5) == 2
    assert local_rank({}, fallback=5) == 5
    assert local_rank({}, fallback=None) == 0
    with pytest.raises(DeviceError, match="not an integer"):
        local_rank({"LOCAL_RANK": "x"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def startup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """ds_wizard.train's real start-up in one CPU rank (real DeepSpeed, gloo) whose
    LOCAL_RANK is 1, with DeepSpeed's CPU accelerator recording device selection."""
    from ds_wizard.core.runs.runspec import Accelerator
    from ds_wizard.launch.plan import LaunchRequest, prepare_run

    runs_dir = tmp_path_factory.mktemp("runs")
    plan = prepare_run(LaunchRequest(preset="tiny_mamba", runs_dir=runs_dir, steps=2,
                                     num_gpus=1, accelerator=Accelerator("cpu", 0, "test")))
    env = {**os.environ, "RANK": "0", "LOCAL_RANK": "1", "WORLD_SIZE": "1",
           "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "CUDA_VISIBLE_DEVICES": "", "DS_ACCELERATOR": "cpu"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "rank_scripts" /
                                               "record_startup.py"), str(plan.run_dir)],
                          env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(lines[0].removeprefix("RESULT "))
    from ds_wizard.core.runs.metrics import read_metrics

    result["metrics"] = read_metrics(Path(plan.run_dir) / "metrics.jsonl")
    result["tokens_per_step"] = plan.run.micro_batch * plan.run.grad_accum * 1 \
        * plan.spec.train.seq_len
    return result


@pytest.mark.slow
def test_the_rank_selects_its_own_device_before_the_model_exists(startup: dict) -> None:
    names = [e[0] for e in startup["events"]]
    assert names.index("init_distributed") < names.index("set_device") \
        < names.index("build_model") < names.index("initialize")
    first = next(e for e in startup["events"] if e[0] == "set_device")
    assert first == ["set_device", 1]  # LOCAL_RANK, not device 0
    assert startup["device"] == "cpu"


@pytest.mark.slow
def test_the_engine_optimizer_has_a_no_decay_group(startup: dict) -> None:
    from ds_wizard.core.presets.lookup import load_preset

    spec = load_preset("tiny_mamba").spec
    decays = sorted(g["weight_decay"] for g in startup["groups"])
    assert decays == [0.0, spec.train.weight_decay]
    assert sum(g["numel"] for g in startup["groups"]) > 0


def _fake_mamba_ssm(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """mamba_ssm cannot import without CUDA: stand-ins that record how it is called."""
    import types

    import torch

    calls: list[dict] = []

    class MambaLMHeadModel(torch.nn.Module):
        def __init__(self, config, device=None, dtype=None):  # type: ignore[no-untyped-def]
            super().__init__()
            calls.append({"device": device, "dtype": dtype})
            self.config = config
            self.w = torch.nn.Parameter(torch.zeros(4, dtype=dtype or torch.float32,
                                                    device=device))

    class MambaConfig:
        def __init__(self, **kwargs):  # type: ignore[no-untyped-def]
            self.__dict__.update(kwargs)

    mods = {"mamba_ssm": types.ModuleType("mamba_ssm"),
            "mamba_ssm.models": types.ModuleType("mamba_ssm.models"),
            "mamba_ssm.models.mixer_seq_simple": types.ModuleType("mixer_seq_simple"),
            "mamba_ssm.models.config_mamba": types.ModuleType("config_mamba")}
    mods["mamba_ssm.models.mixer_seq_simple"].MambaLMHeadModel = MambaLMHeadModel
    mods["mamba_ssm.models.config_mamba"].MambaConfig = MambaConfig
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return calls


@pytest.mark.parametrize(("cfg", "dtype"), [
    ({"bf16": {"enabled": True}, "zero_optimization": {"stage": 2}}, "bfloat16"),
    ({"fp16": {"enabled": True}, "zero_optimization": {"stage": 1}}, "float16"),
    ({"torch_autocast": {"enabled": True}, "zero_optimization": {"stage": 2}}, None),
])
def test_mamba_ssm_is_built_on_the_cpu_in_the_dtype_deepspeed_stores(
        monkeypatch: pytest.MonkeyPatch, cfg: dict, dtype: str | None) -> None:
    import torch

    from ds_wizard.core.presets.lookup import load_preset
    from ds_wizard.train.model import build_model

    calls = _fake_mamba_ssm(monkeypatch)
    model = build_model(load_preset("mamba2_130m").spec.model, "mamba_ssm", cfg)
    assert calls == [{"device": None, "dtype": dtype and getattr(torch, dtype)}]
    assert all(p.device.type == "cpu" for p in model.parameters())


@pytest.mark.slow
def test_throughput_windows_leave_out_checkpoint_saves(startup: dict) -> None:
    records = startup["metrics"]
    assert [r["step"] for r in records] == [1, 2, 3]  # log_every 1, a save after each
    for before, after in itertools.pairwise(records):
        wall = after["elapsed_s"] - before["elapsed_s"]  # includes the save
        window = startup["tokens_per_step"] / after["tokens_per_s"]  # what was timed
        assert wall >= startup["save_seconds"]
        assert window < wall - startup["save_seconds"] * 0.9, (window, wall)
