"""``ds-wizard doctor`` and the launch gate, against stand-in kernel packages and tools.

No GPU here: the GPU path is pinned with stand-ins the tests build in tmp dirs and put on
PYTHONPATH (a ``mamba_ssm`` whose causal-conv1d bindings are None, a
``selective_scan_cuda`` that fails with an undefined symbol, a ``triton``), a fake GPU
inventory, a stand-in ``nvcc`` and a stand-in ``ssh`` that runs the remote command here.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from ds_wizard.cli import main
from ds_wizard.core.plan.gpus import GpuInfo, GpuInventory
from ds_wizard.core.runs.doctor import FAIL, OK, OPT_TORCH_FUSED, WARN
from ds_wizard.core.runs.runspec import read_run_info
from ds_wizard.core.runs.runstate import FAILED, read_run_state
from ds_wizard.launch import doctor
from ds_wizard.launch.plan import LaunchRefused, LaunchRequest, prepare_run

ROOT = Path(__file__).resolve().parents[2]
H100 = GpuInventory([GpuInfo(0, 0, "NVIDIA H100 80GB HBM3", 80 << 30, (9, 0), "GPU-h100")],
                    driver_version="580.00")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def standins(root: Path, *, conv_none: bool = False, scan_error: str | None = None) -> Path:
    """mamba_ssm (its Mamba-2 and Mamba-1 modules), selective_scan_cuda and triton."""
    binding = "None" if conv_none else "lambda *a, **k: None"
    _write(root / "mamba_ssm" / "__init__.py", "__version__ = '2.2.6'\n")
    _write(root / "mamba_ssm" / "models" / "__init__.py", "")
    _write(root / "mamba_ssm" / "models" / "mixer_seq_simple.py",
           "class MambaLMHeadModel:\n    pass\n")
    _write(root / "mamba_ssm" / "ops" / "__init__.py", "")
    _write(root / "mamba_ssm" / "ops" / "triton" / "__init__.py", "")
    for mod in ("ops/triton/ssd_combined.py", "ops/selective_scan_interface.py"):
        _write(root / "mamba_ssm" / mod, f"""\
            try:
                from causal_conv1d import causal_conv1d_fn
                from causal_conv1d.cpp_functions import causal_conv1d_fwd_function
            except ImportError:
                causal_conv1d_fn = None
            causal_conv1d_fn = {binding}
            causal_conv1d_fwd_function = {binding}
            causal_conv1d_bwd_function = {binding}
            """)
    _write(root / "mamba_ssm-2.2.6.dist-info" / "METADATA",
           "Metadata-Version: 2.1\nName: mamba-ssm\nVersion: 2.2.6\n")
    if scan_error:
        _write(root / "selective_scan_cuda.py", f"raise ImportError({scan_error!r})\n")
    else:
        _write(root / "selective_scan_cuda.py", "def fwd(*a):\n    pass\n")
    _write(root / "triton" / "__init__.py", "__version__ = '3.5.0'\n")
    return root


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DS_WIZARD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _on_path(monkeypatch: pytest.MonkeyPatch, where: Path) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(where), str(ROOT)]))


def _gpu_request(tmp: Path, **kw) -> LaunchRequest:
    return LaunchRequest("tiny_mamba", 1, runs_dir=tmp / "runs", gpu_report=H100, **kw)


def test_doctor_on_this_machine_passes_with_json_and_a_report(isolated: Path,
                                                               monkeypatch) -> None:
    monkeypatch.setenv("DSW_TEST_SECRET", "hunter2-not-in-reports")
    runner = CliRunner()
    human = runner.invoke(main, ["doctor", "--preset", "tiny_mamba", "--runs-dir", "runs",
                                 "--report", "doctor.md"])
    assert human.exit_code == 0, human.output
    for title in ("versions", "Mamba kernels", "DeepSpeed ops", "host RAM", "/dev/shm",
                  "disk for checkpoints", "open files"):
        assert f"✔ {title}" in human.output
    assert "can run the job" in human.output
    report = (isolated / "doctor.md").read_text()
    assert "| torch |" in report and "## Plan" in report and "tiny_mamba" in report
    assert "hunter2" not in report and str(Path.home()) not in report
    done = runner.invoke(main, ["doctor", "--preset", "tiny_mamba", "--json"])
    data = json.loads(done.stdout)
    assert done.exit_code == 0 and data["can_run"] is True
    assert data["backend"] == "transformers" and data["optimizer"] == "torch_adamw"
    assert {c["id"] for c in data["checks"]} >= {"kernels", "ops", "host_ram", "shm", "disk",
                                                 "limits"}


def test_conv_functions_none_is_named_and_launch_refuses(isolated: Path,
                                                         monkeypatch) -> None:
    _on_path(monkeypatch, standins(isolated / "site", conv_none=True))
    found = doctor.probe_kernels("auto", "mamba2", (9, 0), use_cache=False)
    assert found.backend == "mamba_ssm"
    assert "causal_conv1d_fwd_function" in found.none_functions
    with pytest.raises(LaunchRefused) as info:
        prepare_run(_gpu_request(isolated))
    line = info.value.one_line()
    assert "causal-conv1d functions are None" in line and "causal-conv1d>=1.5.2" in line
    (run_dir,) = (isolated / "runs").iterdir()
    spec = read_run_info(run_dir / "run.json").spec
    assert spec.backend_resolved == "mamba_ssm" and spec.kernels["mamba-ssm"] == "2.2.6"
    state = read_run_state(run_dir)
    assert state is not None and state.status == FAILED and "refused" in state.stop_reason
    assert not (run_dir / "command.txt").exists()  # nothing was started or prepared to start
    assert "✘" in (run_dir / "doctor.md").read_text()


def test_undefined_symbol_is_named_and_the_plan_is_for_what_would_run(isolated: Path,
                                                                      monkeypatch) -> None:
    err = "selective_scan_cuda.so: undefined symbol: _ZN3c104cuda9SetDeviceEi"
    _on_path(monkeypatch, standins(isolated / "site", scan_error=err))
    runner = CliRunner()
    monkeypatch.setattr("ds_wizard.core.plan.gpus.detect_gpus", lambda *a, **k: H100)
    done = runner.invoke(main, ["doctor", "--preset", "tiny_mamba", "--num-gpus", "1",
                                "--json"])
    assert done.exit_code == 1, done.output
    data = json.loads(done.stdout)
    kernels = next(c for c in data["checks"] if c["id"] == "kernels")
    assert kernels["status"] == FAIL and "undefined symbol" in kernels["detail"]
    assert "built against another torch" in kernels["detail"]
    assert "--no-build-isolation --force-reinstall" in kernels["fix"]
    # the rank would have run transformers' PyTorch path: that is what the plan is for
    assert data["backend"] == "transformers"
    with pytest.raises(LaunchRefused, match="undefined symbol"):
        prepare_run(_gpu_request(isolated))
    (run_dir,) = (isolated / "runs").iterdir()
    assert read_run_info(run_dir / "run.json").spec.backend_resolved == "transformers"
    # --no-doctor launches anyway, and the rank is told which backend to run
    plan = prepare_run(_gpu_request(isolated, doctor=False))
    assert plan.run.backend_resolved == "transformers" and plan.command


def test_missing_nvcc_with_a_planned_fused_adam(isolated: Path, monkeypatch) -> None:
    monkeypatch.setattr(doctor, "DEFAULT_CUDA_HOMES", ())
    monkeypatch.setattr(doctor, "torch_build", lambda: {"cuda": "12.4", "hip": None})
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(isolated / "ext"))
    _on_path(monkeypatch, standins(isolated / "site"))
    cfg = isolated / "ds.json"
    cfg.write_text(json.dumps({
        "train_batch_size": 16, "train_micro_batch_size_per_gpu": 16,
        "gradient_accumulation_steps": 1, "bf16": {"enabled": True},
        "zero_optimization": {"stage": 2},
        "optimizer": {"type": "AdamW", "params": {"lr": 3e-4, "weight_decay": 0.1}}}))
    with pytest.raises(LaunchRefused) as info:
        prepare_run(_gpu_request(isolated, config_path=cfg))
    line = info.value.one_line()
    assert "FusedAdam" in line and "no nvcc" in line and "torch_adam=true" in line
    (run_dir,) = (isolated / "runs").iterdir()
    assert read_run_info(run_dir / "run.json").spec.optimizer == "deepspeed_fused_adam"
    # the config ds-wizard builds itself: torch's fused AdamW instead, and the notes say so
    plan = prepare_run(_gpu_request(isolated))
    assert plan.run.optimizer == OPT_TORCH_FUSED
    assert any("AdamW(fused=True)" in n for n in plan.notes)
    # an nvcc of another CUDA major than torch's is named too
    bin_dir = isolated / "bin"
    _write(bin_dir / "nvcc", "#!/bin/sh\necho 'Cuda compilation tools, release 11.8, V11.8.89'\n")
    (bin_dir / "nvcc").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    decision = doctor.decide_optimizer(json.loads(cfg.read_text()), plan.accelerator,
                                       user_config=True)
    assert decision.check.status == FAIL and "nvcc 11.8 does not match" in \
        decision.check.detail


def test_the_kernel_probe_is_cached_per_environment(isolated: Path, monkeypatch) -> None:
    site = standins(isolated / "site")
    _on_path(monkeypatch, site)
    calls = []
    real = doctor._kernel_probe
    monkeypatch.setattr(doctor, "_kernel_probe", lambda *a: calls.append(a) or real(*a))
    first = doctor.probe_kernels("auto", "mamba2", (9, 0))
    again = doctor.probe_kernels("auto", "mamba2", (9, 0))
    assert first == again and first.backend == "mamba_ssm" and len(calls) == 1
    # a changed install is another environment: probed again
    (site / "selective_scan_cuda.py").write_text("raise ImportError('undefined symbol: x')\n")
    os.utime(site / "selective_scan_cuda.py", ns=(1, 1))
    changed = doctor.probe_kernels("auto", "mamba2", (9, 0))
    assert len(calls) == 2 and "selective_scan_cuda" in changed.errors


FAKE_SSH = """import os, subprocess, sys
# ssh [-o OPT]... HOST COMMAND: run COMMAND here. Host "node-b" has another deepspeed.
args = sys.argv[1:]
while args and args[0] == "-o":
    args = args[2:]
host, command = args[0], " ".join(args[1:])
if host == "unreachable":
    print("ssh: connect to host unreachable port 22: No route to host", file=sys.stderr)
    sys.exit(255)
if host == "node-b":
    command = command.replace("export PYTHONPATH=",
                              "export PYTHONPATH=" + os.environ["FAKE_OTHER_SITE"] + ":")
sys.exit(subprocess.run(["bash", "-c", command]).returncode)
"""


def test_hostfile_checks_every_host_and_names_the_one_that_differs(
        isolated: Path, monkeypatch) -> None:
    bin_dir = isolated / "bin"
    _write(bin_dir / "ssh", f"#!{sys.executable}\n{FAKE_SSH}")
    (bin_dir / "ssh").chmod(0o755)
    other = isolated / "other-site"
    _write(other / "deepspeed-0.16.0.dist-info" / "METADATA",
           "Metadata-Version: 2.1\nName: deepspeed\nVersion: 0.16.0\n")
    monkeypatch.setenv("FAKE_OTHER_SITE", str(other))
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    hosts = isolated / "hosts"
    hosts.write_text("node-a slots=1\nnode-b slots=1\nunreachable slots=1\n")
    done = CliRunner().invoke(main, ["doctor", "--preset", "tiny_mamba", "--hostfile",
                                     str(hosts), "--master-addr", "127.0.0.1", "--json"])
    assert done.exit_code == 1, done.output
    rows = {c["id"]: c for c in json.loads(done.stdout)["checks"]}
    assert rows["host:node-a"]["status"] == OK
    assert "master 127.0.0.1 reachable" in rows["host:node-a"]["detail"]
    assert rows["host:node-b"]["status"] == FAIL
    assert "deepspeed 0.16.0 (here " in rows["host:node-b"]["detail"]
    assert rows["host:unreachable"]["status"] == FAIL
    assert "No route to host" in rows["host:unreachable"]["detail"]
    assert "BatchMode" in rows["host:unreachable"]["fix"]


def test_judges_pin_the_verdicts() -> None:
    from ds_wizard.core.runs import doctor as v

    facts = v.HostFacts(ram_available=8 << 30, ram_total=16 << 30, shm_bytes=64 << 20,
                        disk_free=1 << 30, nofile=256, nproc=100)
    assert v.judge_shm(facts, cuda=True, ranks_per_node=8).status == FAIL
    assert v.judge_shm(facts, cuda=False, ranks_per_node=2).status == OK
    assert v.judge_limits(facts, 1).status == FAIL
    assert v.judge_disk(facts, 2 << 30, "runs").status == FAIL
    assert v.judge_host_ram(9 << 30, facts, 0.9, "x").status == FAIL
    # 7b under mixed precision on 8 ranks: one bf16 copy each, not eight fp32 ones
    need = v.gpu_host_need(6_945_935_360, backend="mamba_ssm", zero_stage=2, param_bytes=2,
                           ranks_per_node=8)
    assert 100 << 30 < need < 112 << 30  # about 108 GiB, where fp32 copies were 224 GB
    assert v.gpu_host_need(10**9, backend="transformers", zero_stage=3, param_bytes=2,
                           ranks_per_node=8) == 8 * v.RANK_PROCESS_BYTES
    old = v.KernelProbe("mamba_ssm", "kernels", versions={"mamba-ssm": "2.2.6",
                                                            "causal-conv1d": "1.4.0"})
    assert v.judge_kernels(old, "auto", cuda=True).status == FAIL
    absent = v.KernelProbe("transformers", "mamba-ssm not installed",
                           errors={"mamba_ssm": "not installed"})
    assert v.judge_kernels(absent, "auto", cuda=True).status == WARN
    coll = v.CollectiveResult("gloo", 3, (0, 2), error="timeout")
    check = v.judge_collectives(coll, 5)
    assert check.status == FAIL and "rank(s) 1 did not join" in check.detail


def test_launch_dry_run_with_a_hostfile_shows_the_master_address(isolated: Path,
                                                                 monkeypatch) -> None:
    (isolated / "hosts").write_text("gpu07 slots=8\ngpu08 slots=8\n")
    done = CliRunner().invoke(main, ["launch", "--preset", "tiny_mamba", "--hostfile",
                                     "hosts", "--dry-run"])
    assert done.exit_code == 0, done.output
    assert "--master_addr=gpu07" in done.output
    done = CliRunner().invoke(main, ["launch", "--preset", "tiny_mamba", "--hostfile",
                                     "hosts", "--dry-run", "--master-addr", "10.0.0.7"])
    assert "--master_addr=10.0.0.7" in done.output


def test_gpu_ranks_get_pci_bus_order() -> None:
    from ds_wizard.core.runs.runspec import Accelerator
    from ds_wizard.launch.command import run_env

    env = run_env(Accelerator("cuda", 2, "test"), 2)
    assert env["CUDA_DEVICE_ORDER"] == os.environ.get("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    assert "CUDA_DEVICE_ORDER" not in run_env(Accelerator("cpu", 0, "test"), 2)


def test_no_fused_adam_build_is_announced_when_torchs_fused_adamw_runs(
        isolated: Path, monkeypatch) -> None:
    from ds_wizard.core.runs.runspec import Accelerator
    from ds_wizard.launch.session import first_run_watch

    monkeypatch.setattr(doctor, "DEFAULT_CUDA_HOMES", ())
    monkeypatch.setattr(doctor, "torch_build", lambda: {"cuda": "12.4", "hip": None})
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(isolated / "ext"))
    plan = prepare_run(LaunchRequest("tiny_mamba", 1, runs_dir=isolated / "runs",
                                     accelerator=Accelerator("cuda", 1, "test"), dry_run=True))
    assert plan.run.optimizer == OPT_TORCH_FUSED
    said: list[str] = []
    first_run_watch(plan, said.append).stop()
    assert not any("fused_adam" in line for line in said), said


def test_launch_command_refuses_before_any_rank_starts(isolated: Path, monkeypatch) -> None:
    """`ds-wizard launch` itself, with a GPU and a mamba_ssm whose conv functions are None:
    one error line with the fix, exit 1, and no supervisor (hence no rank) ever started."""
    _on_path(monkeypatch, standins(isolated / "site", conv_none=True))
    monkeypatch.setattr("ds_wizard.core.plan.gpus.detect_gpus", lambda *a, **k: H100)

    def never(*a, **k):
        raise AssertionError("a supervisor was started")

    monkeypatch.setattr("ds_wizard.launch.client.start_supervisor", never)
    done = CliRunner().invoke(main, ["launch", "--preset", "tiny_mamba", "--steps", "2",
                                     "--runs-dir", "runs"])
    assert done.exit_code == 1, done.output
    assert "error: refused before launch: Mamba kernels" in done.output
    assert "--no-doctor" in done.output
    (run_dir,) = (isolated / "runs").iterdir()
    assert read_run_info(run_dir / "run.json").spec.backend_resolved == "mamba_ssm"
    assert not (run_dir / "train.log").exists()
    runs = CliRunner().invoke(main, ["runs", "--runs-dir", "runs"])
    assert "failed" in runs.output


def test_a_cpu_run_json_records_backend_versions_and_optimizer(isolated: Path) -> None:
    from ds_wizard.core.runs.runspec import Accelerator

    plan = prepare_run(LaunchRequest("tiny_mamba", runs_dir=isolated / "runs",
                                     accelerator=Accelerator("cpu", 0, "test")))
    spec = read_run_info(plan.paths.run_json).spec
    assert spec.backend_resolved == "transformers" and spec.optimizer == "torch_adamw"
    assert spec.kernels is not None and spec.kernels["torch"] and "mamba-ssm" in spec.kernels
    assert plan.doctor is not None and plan.doctor.can_run
