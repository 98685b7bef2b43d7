"""Ranks to devices (issue 11): whatever form CUDA_VISIBLE_DEVICES takes (integers in any
order, GPU UUIDs, MIG ids), rank i runs on the i-th listed device.

The mapping is checked against DeepSpeed's own code: its runner's ``--include`` parser
(``int()`` on each slot, sorted) and its per-node launcher, which exports the device list
to every rank and numbers the ranks by LOCAL_RANK.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ds_wizard.core.plan.gpus import GpuInfo, GpuInventory
from ds_wizard.core.runs.runspec import Accelerator
from ds_wizard.launch import command
from ds_wizard.launch import plan as planning
from ds_wizard.launch.plan import LaunchRequest

PHYSICAL = 8  # the GPUs DeepSpeed's runner counts on the box


def rank_devices(selection: list[str], visible: str | None) -> list[str]:
    """The device each rank gets, following DeepSpeed's runner and launch.py."""
    from deepspeed.launcher.runner import parse_inclusion_exclusion

    flag = selection[-1] if "--master_addr=127.0.0.1" not in selection else None
    if flag is not None and flag.startswith("--num_gpus="):
        devices = [str(i) for i in range(int(flag.split("=")[1]))]
    elif flag is not None and flag.startswith("--include="):
        pool = parse_inclusion_exclusion({"localhost": PHYSICAL}, flag.split("=", 1)[1], "")
        devices = [str(d) for d in pool["localhost"]]
    else:
        info = next(a for a in selection if a.startswith("--world_info="))
        devices = json.loads(base64.urlsafe_b64decode(info.split("=", 1)[1]))["localhost"]
    # launch.py: CUDA_VISIBLE_DEVICES=",".join(devices) for all, LOCAL_RANK=i for rank i;
    # CUDA then renumbers the list from 0, so rank i's device is entry i
    cvd = ",".join(devices)
    return [cvd.split(",")[i] for i in range(len(devices))]


@pytest.mark.parametrize(("visible", "world", "expected"), [
    (None, 2, ["0", "1"]),
    ("0,1", 2, ["0", "1"]),
    ("3,5,7", 2, ["3", "5"]),
    ("2,0", 2, ["2", "0"]),                          # reordered: kept, not sorted
    ("3,1,2", 3, ["3", "1", "2"]),
    ("GPU-8932f937,GPU-11aa22bb", 2, ["GPU-8932f937", "GPU-11aa22bb"]),
    ("GPU-8932f937", 1, ["GPU-8932f937"]),
    ("MIG-4f3a2b1c-aaaa-bbbb-cccc-0123456789ab", 1,
     ["MIG-4f3a2b1c-aaaa-bbbb-cccc-0123456789ab"]),
    ("1,GPU-8932f937", 2, ["1", "GPU-8932f937"]),
])
def test_rank_i_runs_on_the_ith_listed_device(visible, world, expected) -> None:
    selection = command.rank_selection("cuda", world, "" if visible is None else visible)
    assert rank_devices(selection, visible) == expected


def test_include_cannot_carry_uuids_or_order() -> None:
    """Why the per-node launcher is needed: what DeepSpeed's runner does with them."""
    from deepspeed.launcher.runner import parse_inclusion_exclusion

    with pytest.raises(ValueError, match="invalid literal for int"):
        parse_inclusion_exclusion({"localhost": 4}, "localhost:GPU-8932f937", "")
    assert parse_inclusion_exclusion({"localhost": 4}, "localhost:2,0", "") == {
        "localhost": [0, 2]}


def test_the_summary_says_when_the_environment_carries_the_list() -> None:
    assert command.selection_note("cuda", 2, "0,1") is None
    note = command.selection_note("cuda", 2, "2,0")
    assert note is not None and "deepspeed.launcher.launch" in note and "2,0" in note


def _report(*uuids: str, mig: bool = False) -> GpuInventory:
    return GpuInventory([GpuInfo(i, 0, "NVIDIA A100 MIG 3g.40gb" if mig else "NVIDIA A100",
                              40 * 2**30, (8, 0), u, mig=mig) for i, u in enumerate(uuids)],
                     driver_version="550")


def test_launch_with_uuids_uses_the_per_node_launcher(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bb,GPU-aa")
    plan = planning.prepare_run(LaunchRequest(
        "tiny_mamba", 2, runs_dir=tmp_path, gpu_report=_report("GPU-bb", "GPU-aa"), steps=2))
    assert plan.accelerator.kind == "cuda"
    assert "deepspeed.launcher.launch" in plan.command
    assert rank_devices(list(plan.command), None) == ["GPU-bb", "GPU-aa"]
    assert any("deepspeed.launcher.launch" in n for n in plan.notes)
    script = plan.paths.script.read_text()
    # the hand-run script keeps the launcher's own arguments before --master_port
    assert '-m deepspeed.launcher.launch --world_info=' in script
    assert '--master_addr=127.0.0.1 --master_port="$(' in script


def test_several_ranks_on_mig_are_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-aa,MIG-bb")
    with pytest.raises(planning.LaunchRefused, match="sees only one MIG instance"):
        planning.prepare_run(LaunchRequest("tiny_mamba", 2, runs_dir=tmp_path,
                                           gpu_report=_report("MIG-aa", "MIG-bb", mig=True)))
    assert not list(tmp_path.iterdir())


def test_one_rank_on_a_named_mig_instance_runs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-aa")
    plan = planning.prepare_run(LaunchRequest(
        "tiny_mamba", 1, runs_dir=tmp_path, gpu_report=_report("MIG-aa", mig=True), steps=2))
    assert rank_devices(list(plan.command), None) == ["MIG-aa"]


def test_mig_without_a_named_instance_is_refused_with_the_fix(tmp_path: Path,
                                                              monkeypatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(planning.LaunchRefused) as err:
        planning.prepare_run(LaunchRequest("tiny_mamba", 1, runs_dir=tmp_path,
                                           gpu_report=_report("MIG-aa", mig=True)))
    assert "CUDA_VISIBLE_DEVICES=MIG-aa" in err.value.one_line()


def test_a_skipped_device_is_named_in_the_plan(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    report = GpuInventory(_report("GPU-aa", "GPU-cc").gpus, driver_version="550",
                       skipped=("GPU 1 (NVML index): Insufficient Permissions",))
    plan = planning.prepare_run(LaunchRequest("tiny_mamba", None, runs_dir=tmp_path,
                                              gpu_report=report, dry_run=True))
    assert plan.accelerator == Accelerator("cuda", 2, "2 GPU(s): NVIDIA A100", True)
    assert plan.world_size == 2
    assert "skipped GPU 1 (NVML index): Insufficient Permissions" in plan.notes


def test_launch_gpus_option_selects_and_orders_devices(tmp_path: Path, monkeypatch) -> None:
    """``launch --gpus LIST`` is CUDA_VISIBLE_DEVICES given on the command line: it decides
    detection, the ranks' devices and the environment of the launch and its script."""
    import ds_wizard.core.plan.gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # --gpus wins over the variable
    asked: list[str | None] = []

    def detect(visible: str | None = "env") -> GpuInventory:
        asked.append(visible)
        return _report("GPU-bb", "GPU-aa")

    monkeypatch.setattr(ds_wizard.core.plan.gpus, "detect_gpus", detect)
    plan = planning.prepare_run(LaunchRequest("tiny_mamba", None, runs_dir=tmp_path, steps=2,
                                              gpus="GPU-bb,GPU-aa"))
    assert asked == ["GPU-bb,GPU-aa"] and plan.world_size == 2
    assert rank_devices(list(plan.command), None) == ["GPU-bb", "GPU-aa"]
    assert plan.env["CUDA_VISIBLE_DEVICES"] == "GPU-bb,GPU-aa"
    assert "export CUDA_VISIBLE_DEVICES=GPU-bb,GPU-aa" in plan.paths.script.read_text()
    ints = planning.prepare_run(LaunchRequest("tiny_mamba", 2, runs_dir=tmp_path, steps=2,
                                              gpus="1,3", gpu_report=_report("a", "b")))
    assert "--include=localhost:1,3" in ints.command


def test_detect_gpus_takes_the_list_from_the_caller(monkeypatch) -> None:
    import sys
    import types

    from ds_wizard.core.plan import gpus

    fake = types.ModuleType("pynvml")
    fake.NVMLError = RuntimeError
    fake.nvmlInit = fake.nvmlShutdown = lambda: None
    fake.nvmlSystemGetDriverVersion = lambda: "580"
    fake.nvmlDeviceGetCount = lambda: 2
    fake.nvmlDeviceGetHandleByIndex = lambda i: i
    fake.nvmlDeviceGetCudaComputeCapability = lambda h: (9, 0)
    fake.nvmlDeviceGetName = lambda h: "NVIDIA H100"
    fake.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=80 << 30)
    fake.nvmlDeviceGetUUID = lambda h: f"GPU-{h}"
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(gpus, "_nvml_library_loadable", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert [g.uuid for g in gpus.detect_gpus().gpus] == ["GPU-0"]
    assert [g.uuid for g in gpus.detect_gpus(visible="1,0").gpus] == ["GPU-1", "GPU-0"]
    assert gpus.detect_gpus(visible=None).count == 2


@pytest.mark.slow
def test_deepspeeds_per_node_launcher_gives_rank_i_the_ith_device(tmp_path: Path) -> None:
    """The real ``deepspeed.launcher.launch`` (CPU accelerator: it exports the same
    variable) with the world_info ds-wizard builds for a reordered, mixed list."""
    probe = tmp_path / "probe.py"
    probe.write_text("import json, os, sys\n"
                     "out = sys.argv[1]\n"
                     "env = {k: os.environ[k] for k in ('RANK', 'LOCAL_RANK', "
                     "'CUDA_VISIBLE_DEVICES')}\n"
                     "open(f\"{out}/{env['RANK']}.json\", 'w').write(json.dumps(env))\n")
    tokens = ["2", "MIG-4f3a", "GPU-8932f937"]
    selection = command.rank_selection("cuda", 3, ",".join(tokens))
    assert selection[:4] == [sys.executable, "-u", "-m", "deepspeed.launcher.launch"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, DS_ACCELERATOR="cpu", CUDA_VISIBLE_DEVICES="0")
    subprocess.run([*selection, f"--master_port={port}", "--no_local_rank", str(probe),
                    str(tmp_path)], env=env, check=True, timeout=180, capture_output=True)
    seen = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(3)]
    for rank, env_ in enumerate(seen):
        cvd = env_["CUDA_VISIBLE_DEVICES"].split(",")
        assert cvd == tokens  # the list as given, not sorted, not int()-ed
        assert cvd[int(env_["LOCAL_RANK"])] == tokens[rank]
