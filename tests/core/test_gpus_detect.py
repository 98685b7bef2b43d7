"""detect_gpus against a fake NVML: CUDA_VISIBLE_DEVICES is applied the way CUDA applies
it, and every NVML failure becomes a plain reason instead of an exception."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable

import pytest

from ds_wizard.core.plan import gpus
from ds_wizard.core.plan.gpus import detect_gpus

# (name, memory GiB, compute capability, uuid) as NVML numbers them
BOARD = [
    ("NVIDIA A100-SXM4-80GB", 80, (8, 0), "GPU-aaaa1111"),
    ("Tesla V100-SXM2-32GB", 32, (7, 0), "GPU-bbbb2222"),
    ("NVIDIA H100 80GB HBM3", 80, (9, 0), "GPU-cccc3333"),
]


def fake_nvml(board=BOARD, fail_init: bool = False,
              fail_query: bool = False, refused: tuple[int, ...] = (),
              mig: dict[int, list[tuple[str, int, str]]] | None = None) -> types.ModuleType:
    """``refused``: NVML indices whose handle raises NVML_ERROR_NO_PERMISSION.
    ``mig``: NVML index -> its MIG instances (name, memory GiB, uuid), MIG mode on."""
    m = types.ModuleType("pynvml")
    mig = mig or {}

    class NVMLError(Exception):
        pass

    class NVMLError_NoPermission(NVMLError):
        def __str__(self) -> str:
            return "Insufficient Permissions"

    def init() -> None:
        if fail_init:
            raise NVMLError("Driver Not Loaded")

    def query(fn: Callable) -> Callable:
        def wrapped(*args):
            if fail_query:
                raise NVMLError("Unknown Error")
            return fn(*args)
        return wrapped

    def handle(i: int) -> int:
        if i in refused:
            raise NVMLError_NoPermission()
        return i

    def row(h):  # a physical GPU's handle is its index, a MIG handle is (index, slot)
        if isinstance(h, tuple):
            name, gib, uuid = mig[h[0]][h[1]]
            return name, gib, board[h[0]][2], uuid
        return board[h]

    def mig_handle(h: int, j: int) -> tuple[int, int]:
        if j >= len(mig.get(h, [])):
            raise NVMLError("Not Found")
        return (h, j)

    m.NVMLError = NVMLError
    m.NVMLError_NoPermission = NVMLError_NoPermission
    m.nvmlInit = init
    m.nvmlShutdown = lambda: None
    m.nvmlSystemGetDriverVersion = query(lambda: b"550.54.15")
    m.nvmlDeviceGetCount = query(lambda: len(board))
    m.nvmlDeviceGetHandleByIndex = query(handle)
    m.nvmlDeviceGetCudaComputeCapability = query(lambda h: row(h)[2])
    m.nvmlDeviceGetName = query(lambda h: row(h)[0])
    m.nvmlDeviceGetMemoryInfo = query(lambda h: types.SimpleNamespace(total=row(h)[1] << 30))
    m.nvmlDeviceGetUUID = query(lambda h: row(h)[3])
    m.nvmlDeviceGetMigMode = lambda h: (1, 1) if h in mig else (0, 0)
    m.nvmlDeviceGetMaxMigDeviceCount = lambda h: 7
    m.nvmlDeviceGetMigDeviceHandleByIndex = mig_handle
    m.nvmlDeviceGetGpuInstanceId = lambda h: 10 + h[1]
    m.nvmlDeviceGetComputeInstanceId = lambda h: 0
    return m


@pytest.fixture
def nvml(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    def install(cvd: str | None = None, order: str | None = "PCI_BUS_ID", **kw) -> None:
        monkeypatch.setattr(gpus, "_nvml_library_loadable", lambda: True)
        if order is None:
            monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
        else:
            monkeypatch.setenv("CUDA_DEVICE_ORDER", order)
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


# -- per-device errors, MIG, CUDA order (issue 11) -------------------------------------------

def test_a_refused_device_leaves_the_others_usable(nvml):
    nvml(refused=(1,))
    report = detect_gpus()
    assert [g.name for g in report.gpus] == [BOARD[0][0], BOARD[2][0]]
    assert [g.index for g in report.gpus] == [0, 1]
    assert report.reason is None
    assert report.skipped == ("GPU 1 (NVML index): Insufficient Permissions",)
    assert report.to_dict()["skipped"] == ["GPU 1 (NVML index): Insufficient Permissions"]
    assert report.bf16_supported is True  # the refused V100 no longer decides bf16


def test_every_device_refused_is_a_reason_not_a_traceback(nvml):
    nvml(refused=(0, 1, 2))
    report = detect_gpus()
    assert report.count == 0 and len(report.skipped) == 3
    assert report.reason == "NVML refused every GPU (GPU 0 (NVML index): Insufficient Permissions)"


def test_a_refused_device_keeps_cvd_uuids_working(nvml):
    nvml("GPU-cccc3333,GPU-aaaa1111", refused=(1,))
    assert [g.nvml_index for g in detect_gpus().gpus] == [2, 0]


A100_40 = [("NVIDIA A100-SXM4-40GB", 40, (8, 0), f"GPU-a{i}") for i in range(2)]
MIGS = {0: [("NVIDIA A100-SXM4-40GB MIG 3g.20gb", 20, "MIG-1111aaaa"),
            ("NVIDIA A100-SXM4-40GB MIG 1g.5gb", 5, "MIG-2222bbbb")]}


def test_mig_instances_are_listed_with_their_own_memory(nvml):
    nvml(board=A100_40, mig=MIGS)
    report = detect_gpus()
    assert [(g.uuid, g.memory_total >> 30, g.mig) for g in report.gpus] == [
        ("MIG-1111aaaa", 20, True), ("MIG-2222bbbb", 5, True), ("GPU-a1", 40, False)]
    assert report.mig


@pytest.mark.parametrize("cvd, uuids", [
    ("MIG-2222bbbb", ["MIG-2222bbbb"]),
    ("MIG-2222", ["MIG-2222bbbb"]),                      # a unique prefix
    ("MIG-GPU-a0/11/0", ["MIG-2222bbbb"]),               # the CUDA 11 form
    ("GPU-a1,MIG-1111aaaa", ["GPU-a1", "MIG-1111aaaa"]),  # mixed, order kept
    ("0", ["MIG-1111aaaa"]),  # a MIG-mode GPU by index: CUDA shows its first instance
    ("MIG-zzzz", []),
])
def test_mig_ids_in_cuda_visible_devices(nvml, cvd, uuids):
    nvml(cvd, board=A100_40, mig=MIGS)
    report = detect_gpus()
    assert [g.uuid for g in report.gpus] == uuids
    assert [g.index for g in report.gpus] == list(range(len(uuids)))


def test_mig_mode_without_instances_is_said(nvml):
    nvml(board=A100_40[:1], mig={0: []})
    report = detect_gpus()
    assert report.count == 0
    assert report.reason == "the GPUs are in MIG mode with no MIG instance created"


def test_integer_ids_follow_cuda_fastest_first_by_default(nvml):
    # BOARD in NVML (PCI) order is A100, V100, H100; CUDA's default puts the H100 first
    nvml("0,2", order=None)
    report = detect_gpus()
    assert [g.name for g in report.gpus] == [BOARD[2][0], BOARD[1][0]]
    assert report.notes and "CUDA_DEVICE_ORDER=PCI_BUS_ID" in report.notes[0]


def test_integer_ids_follow_pci_order_when_asked(nvml):
    nvml("0,2", order="PCI_BUS_ID")
    report = detect_gpus()
    assert [g.name for g in report.gpus] == [BOARD[0][0], BOARD[2][0]]
    assert report.notes == ()


def test_identical_gpus_keep_pci_order_and_need_no_note(nvml):
    nvml("1,0", order=None, board=A100_40)
    report = detect_gpus()
    assert [g.uuid for g in report.gpus] == ["GPU-a1", "GPU-a0"] and report.notes == ()


def test_an_ambiguous_uuid_prefix_selects_nothing(nvml):
    nvml("GPU-a", board=A100_40)
    assert detect_gpus().count == 0


def test_a_repeated_device_stops_the_list(nvml):
    nvml("0,1,0")  # two ranks on one GPU is never meant: the list stops there
    assert [g.nvml_index for g in detect_gpus().gpus] == [0, 1]


def test_gpus_command_shows_skipped_devices_and_mig(nvml):
    from ds_wizard.commands.gpus import render_gpus

    nvml(board=A100_40, mig=MIGS, refused=(1,))
    lines = render_gpus(detect_gpus())
    assert any("MIG MIG-1111aaaa" in ln and "20.0 GiB" in ln for ln in lines)
    assert "  skipped GPU 1 (NVML index): Insufficient Permissions" in lines
    assert any("pick one with CUDA_VISIBLE_DEVICES=MIG-" in ln for ln in lines)
