"""detect_gpus against a fake NVML: CUDA_VISIBLE_DEVICES is applied the way CUDA applies
it, and every NVML failure becomes a plain reason instead of an exception."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable

import pytest

from ds_wizard.core import gpus
from ds_wizard.core.gpus import detect_gpus

# (name, memory GiB, compute capability, uuid) as NVML numbers them
BOARD = [
    ("NVIDIA A100-SXM4-80GB", 80, (8, 0), "GPU-aaaa1111"),
    ("Tesla V100-SXM2-32GB", 32, (7, 0), "GPU-bbbb2222"),
    ("NVIDIA H100 80GB HBM3", 80, (9, 0), "GPU-cccc3333"),
]


def fake_nvml(board=BOARD, fail_init: bool = False,
              fail_query: bool = False) -> types.ModuleType:
    m = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    def init() -> None:
        if fail_init:
            raise NVMLError("Driver Not Loaded")

    def query(fn: Callable) -> Callable:
        def wrapped(*args):
            if fail_query:
                raise NVMLError("Unknown Error")
            return fn(*args)
        return wrapped

    m.NVMLError = NVMLError
    m.nvmlInit = init
    m.nvmlShutdown = lambda: None
    m.nvmlSystemGetDriverVersion = query(lambda: b"550.54.15")
    m.nvmlDeviceGetCount = query(lambda: len(board))
    m.nvmlDeviceGetHandleByIndex = query(lambda i: i)
    m.nvmlDeviceGetCudaComputeCapability = query(lambda h: board[h][2])
    m.nvmlDeviceGetName = query(lambda h: board[h][0])
    m.nvmlDeviceGetMemoryInfo = query(lambda h: types.SimpleNamespace(total=board[h][1] << 30))
    m.nvmlDeviceGetUUID = query(lambda h: board[h][3])
    return m


@pytest.fixture
def nvml(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    def install(cvd: str | None = None, **kw) -> None:
        monkeypatch.setattr(gpus, "_nvml_library_loadable", lambda: True)
        monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(**kw))
        if cvd is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", cvd)
    return install


def test_all_gpus_without_cuda_visible_devices(nvml):
    nvml()
    report = detect_gpus()
    assert [g.name for g in report.gpus] == [b[0] for b in BOARD]
    assert report.driver_version == "550.54.15" and report.reason is None
    assert [g.memory_total >> 30 for g in report.gpus] == [80, 32, 80]
    assert report.bf16_supported is False  # the V100 has no bf16


@pytest.mark.parametrize("cvd, nvml_ids", [
    ("2,0", [2, 0]),          # listed order, renumbered from 0
    ("1", [1]),
    (" 0 , 2 ", [0, 2]),
    ("0,7,2", [0]),           # CUDA stops at the first invalid entry
    ("2,-1,0", [2]),
    ("GPU-cccc,GPU-aaaa1111", [2, 0]),  # UUIDs and their prefixes
    ("GPU-zzzz", []),
])
def test_cuda_visible_devices_selects_and_renumbers(nvml, cvd, nvml_ids):
    nvml(cvd)
    report = detect_gpus()
    assert [g.nvml_index for g in report.gpus] == nvml_ids
    assert [g.index for g in report.gpus] == list(range(len(nvml_ids)))
    assert report.cuda_visible_devices == cvd
    if not nvml_ids:
        assert report.reason == f"CUDA_VISIBLE_DEVICES={cvd!r} hides every GPU"


def test_empty_cuda_visible_devices_hides_everything(nvml):
    nvml("")
    report = detect_gpus()
    assert report.count == 0 and "hides every GPU" in report.reason


def test_visible_subset_decides_bf16(nvml):
    nvml("0,2")
    assert detect_gpus().bf16_supported is True


def test_nvml_init_failure_is_a_reason(nvml):
    nvml(fail_init=True)
    report = detect_gpus()
    assert report.count == 0
    assert report.reason == "no NVIDIA driver or GPU found (NVML: Driver Not Loaded)"


def test_nvml_query_failure_is_a_reason(nvml):
    nvml(fail_query=True)
    report = detect_gpus()
    assert report.count == 0 and report.reason == "NVML error while reading GPUs: Unknown Error"


def test_no_driver_library_answers_without_pynvml(monkeypatch):
    monkeypatch.setattr(gpus, "_nvml_library_loadable", lambda: False)
    monkeypatch.setitem(sys.modules, "pynvml", None)  # any import of it would now fail
    report = detect_gpus()
    assert report.count == 0
    assert report.reason == "no NVIDIA driver or GPU found (NVML: NVML Shared Library Not Found)"
