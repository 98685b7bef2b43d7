"""One-shot GPU check (issue 11): the CUDA path of ds-wizard, measured in one short run.

Made for a single-H200 machine with Python 3.12, torch (CUDA), Triton, nvcc and ninja, but
without DeepSpeed, pydantic, mamba-ssm, causal-conv1d, platformdirs, hjson or tomli-w, and
without network. ``benchmarks/stage_gpu_check.sh`` stages those as wheels plus mamba-ssm's
Python sources in ``.gpucheck/`` (docs/gpu-check.md gives the one command to run it). It
compiles no CUDA code: Mamba-2 runs on mamba-ssm's Triton kernels, causal-conv1d is
ds-wizard's PyTorch stand-in (``ds_wizard/train/causal_conv1d_fallback.py``), and
DeepSpeed's optimizer is torch's AdamW (``torch_adam``) rather than its JIT-built FusedAdam.

Phases, each written to ``OUT/gpu_check.json`` and ``OUT/gpu_check.md`` as it finishes,
in this order (phase 3 warms Triton's autotuning cache before any launch is timed):

0. ``ds-wizard doctor --json``: the machine's own verdict, first.
1. NVML detection against torch, and ranks-to-devices through DeepSpeed's per-node launcher
   with the GPU named by UUID.
2. A real ZeRO-2 ``mamba2_130m`` run through ``ds-wizard launch`` (CUDA_VISIBLE_DEVICES set
   to the UUID), then ``MambaLMHeadModel.from_pretrained`` of ``final/``.
3. Saved-activation bytes (``saved_tensors_hooks``) and ``max_memory_allocated`` after a
   warm-up step, against the memory model, at micro-batch 1, 2, 4 and 8.
4. ZeRO-3, activation checkpointing on, ZeRO-3 with checkpointing together, and autocast:
   one short launch each, the rank's own ``backend:`` line read, and the measured peak
   (``max_mem_alloc_gib``, reset after step 1) within ±15 % of the plan's allocated bytes.
5. Throughput and MFU of ``mamba2_1.3b`` at micro-batch 4 (its plan fits an 80 GB H100 with
   the checker's own CUDA context beside it) against a measured bf16 matmul ceiling.

The pass/fail rules are the functions in :data:`CHECKS`. ``--self-test`` runs what a CPU
can: phase 1 against a fake NVML (a refused device, MIG instances, reordered ids), the conv
stand-in against an explicit causal sum in float64, every rule in :data:`CHECKS` against a
fake that must pass and one that must fail (``GPU_CHECK_BREAK=NAME`` replaces a rule with
one that accepts anything, which the self-test must catch), and the result files.

    python3 benchmarks/gpu_check.py --out "$OUT"          # on the GPU machine
    python3 benchmarks/gpu_check.py --self-test --out /tmp/gc
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STAGE = ROOT / ".gpucheck"
BUDGET_S = 540  # nine minutes, everything included
# Triton's autotuning results are kept on disk, so only the first process that runs a
# kernel shape pays for the search (its compiled kernels are cached on disk anyway)
LAUNCH_ENV = {"PYTHONUNBUFFERED": "1", "TRITON_CACHE_AUTOTUNING": "1"}
STUB = '''"""Written by benchmarks/gpu_check.py: mamba-ssm 2.3's package imports its Mamba-1
selective-scan extension, which this check does not build. Mamba-2 never calls it."""


def _absent(*args, **kwargs):
    raise RuntimeError("selective_scan_cuda is not built in the GPU check (Mamba-1 only)")


fwd = bwd = _absent
'''

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# -- results ---------------------------------------------------------------------------------

class Recorder:
    """Each phase's result, written out as soon as it is known."""

    def __init__(self, out: Path, deadline: float) -> None:
        self.out = out
        self.deadline = deadline
        self.phases: list[dict[str, Any]] = []
        out.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, number: int, name: str, fn: Callable[[Recorder], dict[str, Any]],
            needs_s: float = 0) -> None:
        started = time.monotonic()
        if self.left() < needs_s:
            entry = {"status": "skipped", "why": f"{self.left():.0f} s left, needs {needs_s:.0f}"}
        else:
            try:
                entry = fn(self)
                entry.setdefault("status", "ok" if all(entry.get("checks", {}).values())
                                 else "FAILED")
            except Exception as exc:  # a phase that breaks is a result; the next still runs
                entry = {"status": "error", "error": f"{type(exc).__name__}: {exc}",
                         "traceback": traceback.format_exc()[-3000:]}
        entry = {"phase": number, "name": name, **entry,
                 "seconds": round(time.monotonic() - started, 1)}
        self.phases.append(entry)
        self.write()
        print(f"[gpu_check] phase {number} {name}: {entry['status']} "
              f"({entry['seconds']} s)", flush=True)
        if entry["status"] != "ok":
            print(json.dumps({k: v for k, v in entry.items() if k != "traceback"}, indent=1,
                             default=str)[:4000], flush=True)

    def write(self) -> None:
        (self.out / "gpu_check.json").write_text(json.dumps(
            {"phases": self.phases}, indent=2, default=str) + "\n")
        (self.out / "gpu_check.md").write_text(markdown(self.phases))


def markdown(phases: list[dict[str, Any]]) -> str:
    lines = ["| phase | status | s | result |", "| --- | --- | --- | --- |"]
    for p in phases:
        summary = p.get("summary") or p.get("error") or p.get("why") or ""
        lines.append(f"| {p['phase']}. {p['name']} | {p['status']} | {p['seconds']} | "
                     f"{str(summary).replace('|', '/')} |")
    for p in phases:
        if p.get("table"):
            lines += ["", f"**{p['phase']}. {p['name']}**", "", *p["table"]]
    return "\n".join(lines) + "\n"


# -- environment -----------------------------------------------------------------------------

def prepare_imports(stub_dir: Path) -> dict[str, str]:
    """Make mamba-ssm's staged Python sources importable here and in every launched rank.

    Returns the environment for subprocesses (PYTHONPATH with the repo, the sources, and
    the selective-scan stub where the real extension is absent).
    """
    import importlib.util

    paths = [str(ROOT)]
    src = STAGE / "src"
    if src.is_dir():
        paths.append(str(src))
    sys.path[:0] = [p for p in paths[1:] if p not in sys.path]
    if importlib.util.find_spec("selective_scan_cuda") is None:
        stub_dir.mkdir(parents=True, exist_ok=True)
        (stub_dir / "selective_scan_cuda.py").write_text(STUB)
        paths.append(str(stub_dir))
        sys.path.append(str(stub_dir))
    old = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": os.pathsep.join(paths + ([old] if old else []))}


def cli(args: list[str], env: dict[str, str], cwd: Path,
        timeout: float) -> subprocess.CompletedProcess:
    """``ds-wizard ARGS`` in a fresh interpreter (the console script may not be installed).

    At the time limit the CLI gets SIGTERM, which stops its DeepSpeed job gracefully (a
    plain kill would leave the ranks holding the GPU for the next phase), then SIGKILL;
    the return code is then 124.
    """
    proc = subprocess.Popen([sys.executable, "-m", "ds_wizard.cli", *args], cwd=cwd,
                            env={**os.environ, **LAUNCH_ENV, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=max(5.0, timeout))
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=45)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        return subprocess.CompletedProcess(proc.args, 124, out + "\n[gpu_check] time limit",
                                           "")


def tail(text: str, n: int = 2500) -> str:
    return text[-n:]


# -- phase 1: NVML and --include -------------------------------------------------------------

def fake_pynvml() -> types.ModuleType:
    """Three GPUs in NVML order: an A100 (MIG mode, two instances), a V100 NVML refuses
    (NVML_ERROR_NO_PERMISSION), an H100."""
    m = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    board = {0: ("NVIDIA A100-SXM4-80GB", 80, (8, 0), "GPU-a100"),
             2: ("NVIDIA H100 80GB HBM3", 80, (9, 0), "GPU-h100")}
    migs = {0: [("NVIDIA A100 MIG 3g.40gb", 40, "MIG-aaaa"), ("NVIDIA A100 MIG 1g.10gb", 10,
                                                              "MIG-bbbb")]}

    def handle(i: int) -> int:
        if i == 1:
            raise NVMLError("Insufficient Permissions")
        return i

    def row(h: Any) -> tuple:
        if isinstance(h, tuple):
            name, gib, uuid = migs[h[0]][h[1]]
            return name, gib, board[h[0]][2], uuid
        return board[h]

    def mig_handle(h: int, j: int) -> tuple[int, int]:
        if j >= len(migs.get(h, [])):
            raise NVMLError("Not Found")
        return (h, j)

    m.NVMLError = NVMLError
    m.nvmlInit = m.nvmlShutdown = lambda: None
    m.nvmlSystemGetDriverVersion = lambda: "580.00"
    m.nvmlDeviceGetCount = lambda: 3
    m.nvmlDeviceGetHandleByIndex = handle
    m.nvmlDeviceGetCudaComputeCapability = lambda h: row(h)[2]
    m.nvmlDeviceGetName = lambda h: row(h)[0]
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=row(h)[1] << 30)
    m.nvmlDeviceGetUUID = lambda h: row(h)[3]
    m.nvmlDeviceGetMigMode = lambda h: (1, 1) if h in migs else (0, 0)
    m.nvmlDeviceGetMaxMigDeviceCount = lambda h: 7
    m.nvmlDeviceGetMigDeviceHandleByIndex = mig_handle
    return m


def ranks_of(selection: list[str]) -> list[str] | None:
    """The device list DeepSpeed's per-node launcher will export, when it is used."""
    info = next((a for a in selection if a.startswith("--world_info=")), None)
    if info is None:
        return None
    return json.loads(base64.urlsafe_b64decode(info.split("=", 1)[1]))["localhost"]


def phase_detect_fake(rec: Recorder) -> dict[str, Any]:
    from ds_wizard.core.plan import gpus
    from ds_wizard.launch.command import rank_selection

    saved = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")}
    real_loadable, real_mod = gpus._nvml_library_loadable, sys.modules.get("pynvml")
    gpus._nvml_library_loadable = lambda: True
    sys.modules["pynvml"] = fake_pynvml()
    try:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        all_ = gpus.detect_gpus()
        os.environ.pop("CUDA_DEVICE_ORDER")
        os.environ["CUDA_VISIBLE_DEVICES"] = "0"
        fastest = gpus.detect_gpus()
        os.environ["CUDA_VISIBLE_DEVICES"] = "MIG-bbbb"
        mig = gpus.detect_gpus()
    finally:
        gpus._nvml_library_loadable = real_loadable
        if real_mod is None:
            sys.modules.pop("pynvml", None)
        else:
            sys.modules["pynvml"] = real_mod
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    checks = {
        "refused device skipped, others kept": all_.count == 3 and len(all_.skipped) == 1,
        "MIG instances with their own memory": [g.memory_total >> 30 for g in all_.gpus
                                                 if g.mig] == [40, 10],
        "fastest-first: id 0 is the H100": [g.uuid for g in fastest.gpus] == ["GPU-h100"],
        "MIG id selects that instance": [g.uuid for g in mig.gpus] == ["MIG-bbbb"],
        "reordered ids keep their order": ranks_of(rank_selection("cuda", 2, "2,0")) == [
            "2", "0"],
        "UUIDs reach the ranks unchanged": ranks_of(rank_selection(
            "cuda", 2, "GPU-h100,GPU-a100")) == ["GPU-h100", "GPU-a100"],
    }
    return {"checks": checks, "summary": f"{sum(checks.values())}/{len(checks)} checks",
            "skipped": list(all_.skipped)}


def phase_detect(rec: Recorder, env: dict[str, str]) -> dict[str, Any]:
    import torch

    from ds_wizard.core.plan.gpus import detect_gpus
    from ds_wizard.launch.command import rank_selection

    report = detect_gpus()
    props = torch.cuda.get_device_properties(0)
    g = report.gpus[0] if report.gpus else None
    uuid = g.uuid if g else ""
    probe = ("import json, os, torch; print(json.dumps({'cvd': os.environ.get("
             "'CUDA_VISIBLE_DEVICES'), 'local_rank': os.environ.get('LOCAL_RANK'), "
             "'count': torch.cuda.device_count(), 'name': torch.cuda.get_device_name(0)}))")
    selection = rank_selection("cuda", 1, uuid)
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "probe.py"
        script.write_text(probe + "\n")
        from ds_wizard.launch.command import free_port

        done = subprocess.run([*selection, f"--master_port={free_port()}", "--no_local_rank",
                               str(script)], env={**os.environ, **env,
                                                  "CUDA_VISIBLE_DEVICES": uuid},
                              capture_output=True, text=True, timeout=min(120, rec.left()))
    seen = next((json.loads(line) for line in done.stdout.splitlines()
                 if line.startswith("{")), {})
    checks = {
        "NVML sees the GPU torch sees": report.count == torch.cuda.device_count(),
        "same name": bool(g) and g.name == torch.cuda.get_device_name(0),
        "memory within 2 %": bool(g) and abs(g.memory_total - props.total_memory)
        <= 0.02 * props.total_memory,
        "UUID goes through deepspeed.launcher.launch": ranks_of(selection) == [uuid],
        "the rank sees exactly that GPU": seen.get("cvd") == uuid and seen.get("count") == 1
        and seen.get("name") == torch.cuda.get_device_name(0),
    }
    return {"checks": checks, "report": report.to_dict(), "rank_probe": seen,
            "launcher_tail": tail(done.stdout + done.stderr, 1500) if not seen else "",
            "summary": f"{g.name if g else 'no GPU'}, {props.total_memory / 2**30:.1f} GiB; "
                       f"{sum(checks.values())}/{len(checks)} checks"}


# -- phases 2, 4, 5: real launches -----------------------------------------------------------

def launch_run(rec: Recorder, env: dict[str, str], work: Path, preset: str, *,
               sets: list[str], micro: int, global_batch: int, steps: int,
               cap_s: float) -> dict[str, Any]:
    """``--auto`` writes the config (torch's AdamW instead of JIT-built FusedAdam), then
    ``launch --config`` trains; returns the run's facts and metrics."""
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "ds_config.json"
    set_args = [a for s in sets for a in ("--set", s)]
    made = cli(["--auto", "--preset", preset, "--num-gpus", "1", "--micro-batch", str(micro),
                "--global-batch", str(global_batch), "--output", str(cfg), *set_args],
               env, work, min(60, rec.left()))
    if made.returncode != 0:
        return {"rc": made.returncode, "stage": "--auto", "output": tail(made.stdout
                                                                           + made.stderr)}
    config = json.loads(cfg.read_text())
    config.setdefault("optimizer", {}).setdefault("params", {})["torch_adam"] = True
    cfg.write_text(json.dumps(config, indent=2))
    runs_dir = work / "runs"
    started = time.monotonic()
    done = cli(["launch", "--preset", preset, "--config", str(cfg), "--num-gpus", "1",
                "--steps", str(steps), "--runs-dir", str(runs_dir), *set_args],
               env, work, min(cap_s, rec.left() - 5))
    run_dirs = sorted(p for p in runs_dir.glob("*") if p.is_dir()) if runs_dir.is_dir() else []
    metrics: list[dict[str, Any]] = []
    if run_dirs and (run_dirs[-1] / "metrics.jsonl").is_file():
        metrics = [json.loads(line) for line in
                   (run_dirs[-1] / "metrics.jsonl").read_text().splitlines() if line.strip()]
    out = done.stdout + done.stderr
    return {"rc": done.returncode, "seconds": round(time.monotonic() - started, 1),
            "run_dir": str(run_dirs[-1]) if run_dirs else None, "metrics": metrics,
            "backend": rank_backend(out),
            "backend_lines": [ln for ln in out.splitlines() if "backend" in ln][:8],
            "output": tail(out), "config": config}


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


# -- the rules every GPU phase is judged by (each proven able to fail by --self-test) -------

GiB = 2**30
PEAK_TOLERANCE = 0.15
H100_BYTES = 80 * 10**9  # "80 GB": 74.5 GiB as torch reports it
CHECKER_CONTEXT_BYTES = 1 * GiB  # this script's own CUDA context beside the run
BIG_MICRO = 4
BIG_PRESET = "mamba2_1.3b"
VARIANTS: dict[str, list[str]] = {
    "zero3": ["deepspeed.zero_stage=3"],
    "checkpointing": ["train.activation_checkpointing=true"],
    "zero3+checkpointing": ["deepspeed.zero_stage=3", "train.activation_checkpointing=true"],
    "autocast": ["train.precision=autocast"],
}
# the order the GPU phases run in: Triton is warmed (phase 3) before any launch
PHASE_ORDER = (0, 1, 3, 2, 4, 5)


def rank_backend(output: str) -> str | None:
    """The backend the rank itself reports (``backend: NAME (why)``, rank 0's log line),
    never the launch side's plan note (``ℹ️  backend NAME: …``)."""
    import re

    for line in output.splitlines():
        m = re.search(r"(?:^|\]\s*|:\s)backend: (\w+) \(", line)
        if m and "ℹ" not in line:
            return m.group(1)
    return None


def check_rank_backend(output: str, want: str = "mamba_ssm") -> bool:
    return rank_backend(output) == want


def check_doctor(report: dict[str, Any]) -> bool:
    """The doctor says the job can run and that a rank will run mamba-ssm's kernels."""
    return bool(report.get("can_run")) and report.get("backend") == "mamba_ssm"


def allocated_plan(est: Any) -> int:
    """What ``max_memory_allocated`` can see of an estimate: no CUDA context, no
    allocator fragmentation."""
    return est.total - est.detail.get("cuda_context", 0) - est.detail.get("fragmentation", 0)


def check_peak(measured_gib: float | None, planned_bytes: int) -> bool:
    """Measured peak within ±15 % of the plan's allocated bytes."""
    if not _finite(measured_gib) or planned_bytes <= 0:
        return False
    return abs(measured_gib * GiB / planned_bytes - 1) <= PEAK_TOLERANCE


def check_fits_h100(planned_total: int) -> bool:
    """The big phase's plan, plus this checker's own context, inside 90 % of 80 GB."""
    return planned_total + CHECKER_CONTEXT_BYTES <= 0.9 * H100_BYTES


def check_zero3_with_checkpointing(variants: dict[str, list[str]]) -> bool:
    return any("deepspeed.zero_stage=3" in v and "train.activation_checkpointing=true" in v
               for v in variants.values())


def check_triton_warm_first(order: tuple[int, ...]) -> bool:
    """Phase 3 (warm-up) runs before every launch phase (2, 4, 5)."""
    return all(order.index(3) < order.index(p) for p in (2, 4, 5) if p in order) \
        and order[0] == 0


def big_phase_plan() -> Any:
    from ds_wizard.core.plan.memory import estimate
    from ds_wizard.core.presets.overrides import load_with_overrides

    spec = load_with_overrides(BIG_PRESET, []).spec
    return estimate(spec, world_size=1, micro_batch=BIG_MICRO, backend="mamba_ssm",
                    bf16_supported=True)


CHECKS: dict[str, Callable[..., bool]] = {
    "doctor": check_doctor,
    "rank_backend": check_rank_backend,
    "peak_vs_plan": check_peak,
    "fits_h100": check_fits_h100,
    "zero3_with_checkpointing": check_zero3_with_checkpointing,
    "triton_warm_first": check_triton_warm_first,
}
if os.environ.get("GPU_CHECK_BREAK"):  # the self-test's proof that it catches a broken rule
    CHECKS[os.environ["GPU_CHECK_BREAK"]] = lambda *a, **k: True


def rule(name: str, *args: Any) -> bool:
    return bool(CHECKS[name](*args))


PLAN_NOTE = "ℹ️  backend mamba_ssm: mamba-ssm's kernels with causal-conv1d"
FAKES: dict[str, tuple[tuple[Any, ...], tuple[Any, ...]]] = {
    # (arguments that must pass, arguments that must fail)
    "doctor": (({"can_run": True, "backend": "mamba_ssm"},),
               ({"can_run": True, "backend": "transformers"},)),
    "rank_backend": ((f"{PLAN_NOTE}\nbackend: mamba_ssm (mamba-ssm's kernels)",),
                     (f"{PLAN_NOTE}\nbackend: transformers (selective_scan_cuda does not "
                      "import)",)),
    "peak_vs_plan": ((10.5, 10 * GiB), (13.0, 10 * GiB)),
    "fits_h100": ((60 * GiB,), (71 * GiB,)),
    "zero3_with_checkpointing": ((VARIANTS,), ({k: v for k, v in VARIANTS.items()
                                               if "+" not in k},)),
    "triton_warm_first": ((PHASE_ORDER,), ((0, 1, 2, 3, 4, 5),)),
}


def phase_rules(rec: Recorder) -> dict[str, Any]:
    """Every rule passes its good fake and fails its bad one; the shipped big phase fits."""
    checks: dict[str, bool] = {}
    for name, (good, bad) in FAKES.items():
        checks[f"{name} accepts the good fake"] = rule(name, *good)
        checks[f"{name} rejects the bad fake"] = not rule(name, *bad)
    plan = big_phase_plan()
    checks[f"{BIG_PRESET} at micro-batch {BIG_MICRO} fits an 80 GB H100"] = rule(
        "fits_h100", plan.total)
    checks["ZeRO-3 runs with checkpointing"] = rule("zero3_with_checkpointing", VARIANTS)
    checks["Triton is warmed before the launches"] = rule("triton_warm_first", PHASE_ORDER)
    return {"checks": checks, "summary": f"{sum(checks.values())}/{len(checks)} rules; "
            f"{BIG_PRESET} mb {BIG_MICRO} plans {plan.total / GiB:.1f} GiB"}


def phase_doctor(rec: Recorder, env: dict[str, str], work: Path) -> dict[str, Any]:
    done = cli(["doctor", "--preset", "mamba2_130m", "--num-gpus", "1", "--json"], env, work,
               min(90, rec.left()))
    try:
        report = json.loads(done.stdout[done.stdout.index("{"):])
    except ValueError:
        report = {}
    return {"checks": {"doctor --json parses": bool(report),
                       "doctor: the job can run on mamba-ssm's kernels": rule("doctor", report)},
            "doctor": report, "rc": done.returncode,
            "summary": f"rc {done.returncode}, backend {report.get('backend')}, "
                       f"optimizer {report.get('optimizer')}"}


def phase_launch(rec: Recorder, env: dict[str, str], work: Path,
                 uuid: str) -> dict[str, Any]:
    import torch

    run = launch_run(rec, {**env, "CUDA_VISIBLE_DEVICES": uuid}, work / "zero2",
                     "mamba2_130m", sets=["train.log_every=5", "train.warmup_steps=5"],
                     micro=8, global_batch=32, steps=20, cap_s=260)
    losses = [m["loss"] for m in run.get("metrics", [])]
    checks = {"launch exits 0": run["rc"] == 0,
              "the rank runs mamba_ssm": rule("rank_backend", out_of(run)),
              "losses finite": bool(losses) and all(_finite(v) for v in losses),
              "loss falls": len(losses) >= 2 and losses[-1] < losses[0]}
    loaded = {}
    if run.get("run_dir") and (Path(run["run_dir"]) / "final").is_dir():
        from ds_wizard.train import causal_conv1d_fallback

        causal_conv1d_fallback.install()
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

        model = MambaLMHeadModel.from_pretrained(str(Path(run["run_dir"]) / "final"),
                                                 device="cuda", dtype=torch.bfloat16)
        ids = torch.randint(0, 50000, (1, 256), device="cuda")
        with torch.no_grad():
            logits = model(ids).logits
        loaded = {"class": type(model).__name__, "logits_shape": list(logits.shape),
                  "finite": bool(torch.isfinite(logits).all())}
        del model
        torch.cuda.empty_cache()
    checks["from_pretrained(final/) runs"] = bool(loaded.get("finite"))
    last = run.get("metrics", [{}])[-1] if run.get("metrics") else {}
    return {"checks": checks, "run": {k: v for k, v in run.items() if k != "config"},
            "loaded": loaded,
            "summary": f"rc {run['rc']}, loss {losses[0]:.3f} → {losses[-1]:.3f}, "
                       f"{last.get('tokens_per_s', 0):,.0f} tok/s, "
                       f"max_mem {last.get('max_mem_alloc_gib')} GiB" if losses else
                       f"rc {run['rc']}"}


def out_of(run: dict[str, Any]) -> str:
    """The lines of a launch's output that name a backend: the plan note and the rank's."""
    return "\n".join(run.get("backend_lines", []))


def phase_variants(rec: Recorder, env: dict[str, str], work: Path) -> dict[str, Any]:
    """ZeRO-3, checkpointing, both, autocast: each run's peak against its plan."""
    from ds_wizard.core.plan.memory import estimate
    from ds_wizard.core.presets.overrides import load_with_overrides

    variants = VARIANTS
    rows, checks, details = [], {}, {}
    table = ["| variant | rc | loss first → last | max_mem_alloc GiB | plan total GiB | "
             "tok/s |", "| --- | --- | --- | --- | --- | --- |"]
    for name, sets in variants.items():
        run = launch_run(rec, env, work / name, "mamba2_130m",
                         sets=["train.log_every=3", "train.warmup_steps=5", *sets],
                         micro=8, global_batch=16, steps=6, cap_s=110)
        metrics = run.get("metrics", [])
        spec = load_with_overrides("mamba2_130m", sets).spec
        plan = estimate(spec, world_size=1, micro_batch=8, backend="mamba_ssm",
                        bf16_supported=True)
        mem = metrics[-1].get("max_mem_alloc_gib") if metrics else None
        losses = [m["loss"] for m in metrics]
        checks[f"{name} runs"] = run["rc"] == 0 and bool(losses) and all(map(_finite, losses))
        checks[f"{name}: the rank runs mamba_ssm"] = rule("rank_backend", out_of(run))
        checks[f"{name}: peak within 15 % of the plan"] = rule("peak_vs_plan", mem,
                                                               allocated_plan(plan))
        loss_text = f"{losses[0]:.3f} → {losses[-1]:.3f}" if losses else "-"
        tps = f"{metrics[-1].get('tokens_per_s', 0):,.0f}" if metrics else "-"
        table.append(f"| {name} | {run['rc']} | {loss_text} | {mem} | "
                     f"{plan.total / 2**30:.2f} | {tps} |")
        rows.append({"variant": name, "rc": run["rc"], "max_mem_alloc_gib": mem,
                     "plan_total_gib": plan.total / 2**30})
        details[name] = {"backend": run.get("backend"),
                         "output": run["output"] if run["rc"] else ""}
        if rec.left() < 60:
            break
    return {"checks": checks, "rows": rows, "table": table, "details": details,
            "summary": ", ".join(f"{r['variant']} rc {r['rc']} {r['max_mem_alloc_gib']} GiB"
                                 for r in rows)}


def matmul_ceiling(torch: Any, n: int = 8192, reps: int = 10) -> float:
    """bf16 FLOP/s of an n×n×n product on random data, the mean of ``reps`` after warm-up."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start)


def phase_mfu(rec: Recorder, env: dict[str, str], work: Path) -> dict[str, Any]:
    import torch

    from ds_wizard.core.plan.params import flops_per_token
    from ds_wizard.core.presets.overrides import load_with_overrides

    ceiling = matmul_ceiling(torch)
    torch.cuda.empty_cache()
    run = launch_run(rec, env, work / "mfu", BIG_PRESET, sets=["train.log_every=4"],
                     micro=BIG_MICRO, global_batch=16, steps=16, cap_s=240)
    metrics = run.get("metrics", [])
    fpt = flops_per_token(load_with_overrides("mamba2_1.3b", []).spec.model)
    steady = metrics[1:] or metrics  # the first window holds Triton autotuning
    tps = sum(m["tokens_per_s"] for m in steady) / len(steady) if steady else 0.0
    mfu = tps * fpt / ceiling if ceiling else 0.0
    checks = {"launch exits 0": run["rc"] == 0, "throughput measured": tps > 0,
              "the plan fits an 80 GB H100": rule("fits_h100", big_phase_plan().total),
              "the rank runs mamba_ssm": rule("rank_backend", out_of(run))}
    return {"checks": checks, "matmul_tflops": ceiling / 1e12, "tokens_per_s": tps,
            "flops_per_token": fpt, "mfu_vs_measured_ceiling": mfu,
            "mfu_reported_by_run": steady[-1].get("mfu") if steady else None,
            "max_mem_alloc_gib": steady[-1].get("max_mem_alloc_gib") if steady else None,
            "output": run["output"] if run["rc"] else "",
            "summary": f"bf16 matmul {ceiling / 1e12:.0f} TFLOP/s; {tps:,.0f} tok/s; "
                       f"MFU {mfu:.1%} of the measured ceiling"
                       + (f", {steady[-1].get('mfu'):.1%} by the run's peak table"
                          if steady and _finite(steady[-1].get("mfu")) else "")}


# -- phase 3: activations against the memory model -------------------------------------------

def phase_activations(rec: Recorder) -> dict[str, Any]:
    import torch

    from ds_wizard.core.plan.memory import activations
    from ds_wizard.core.presets.overrides import load_with_overrides
    from ds_wizard.train import causal_conv1d_fallback
    from ds_wizard.train.model import build_model

    causal_conv1d_fallback.install()
    spec = load_with_overrides("mamba2_130m", []).spec
    seq = spec.train.seq_len
    model = build_model(spec.model, "mamba_ssm").to("cuda", torch.bfloat16)
    param_ptrs = {p.data_ptr() for p in model.parameters()}
    vocab = model.lm_head.weight.shape[0]

    def step(micro: int, count: dict[str, int] | None) -> None:
        ids = torch.randint(0, vocab, (micro, seq), device="cuda")
        seen: set[int] = set()

        def pack(t: torch.Tensor) -> torch.Tensor:
            if count is not None and t.device.type == "cuda":
                ptr = t.untyped_storage().data_ptr()
                if ptr not in param_ptrs and ptr not in seen:
                    seen.add(ptr)
                    count["saved"] += t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            logits = model(ids).logits
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)).float(), ids[:, 1:].reshape(-1))
        loss.backward()

    rows, checks = [], {}
    table = ["| micro | saved GiB | model saved GiB | ratio | peak GiB | model peak GiB | "
             "ratio |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for micro in (1, 2, 4, 8):
        if rec.left() < 30:
            break
        step(micro, None)  # warm-up: Triton autotuning and its argument clones
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()  # parameters and gradients
        torch.cuda.reset_peak_memory_stats()
        count = {"saved": 0}
        step(micro, count)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        acts = activations(spec.model, micro_batch=micro, seq_len=seq, precision="bf16",
                           backend="mamba_ssm")
        model_peak = acts.layers + acts.head + acts.working + acts.logits_peak
        r_saved, r_peak = count["saved"] / acts.saved, peak / model_peak
        rows.append({"micro": micro, "saved": count["saved"], "model_saved": acts.saved,
                     "peak": peak, "model_peak": model_peak})
        table.append(f"| {micro} | {count['saved'] / 2**30:.3f} | {acts.saved / 2**30:.3f} | "
                     f"{r_saved:.3f} | {peak / 2**30:.3f} | {model_peak / 2**30:.3f} | "
                     f"{r_peak:.3f} |")
        checks[f"micro {micro}: saved within 15 %"] = abs(r_saved - 1) <= 0.15
        checks[f"micro {micro}: peak not above the model"] = r_peak <= 1.05
    return {"checks": checks, "rows": rows, "table": table,
            "summary": "; ".join(f"mb {r['micro']}: saved ×{r['saved'] / r['model_saved']:.2f},"
                                 f" peak ×{r['peak'] / r['model_peak']:.2f}" for r in rows)}


# -- self-test (CPU) -------------------------------------------------------------------------

def phase_conv_fallback(rec: Recorder) -> dict[str, Any]:
    import torch

    from ds_wizard.train.causal_conv1d_fallback import causal_conv1d_fwd_function

    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 9, generator=g, dtype=torch.float64)
    w = torch.randn(3, 4, generator=g, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64)
    want = torch.zeros_like(x)
    for t in range(9):
        for k in range(4):
            if t - 3 + k >= 0:
                want[..., t] += w[:, k] * x[..., t - 3 + k]
    want += b[:, None]
    got = causal_conv1d_fwd_function(x, w, b, None, None, None, False)
    err = float((got - want).abs().max())
    return {"checks": {"matches the explicit causal sum (float64)": err < 1e-12},
            "summary": f"max |error| {err:.1e}"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu_check_out"))
    p.add_argument("--self-test", action="store_true", help="the CPU-possible phases only")
    p.add_argument("--budget-s", type=float, default=BUDGET_S)
    p.add_argument("--phases", default="0,1,2,3,4,5", help="which GPU phases to run")
    args = p.parse_args(argv)
    rec = Recorder(args.out, time.monotonic() + args.budget_s)
    if args.self_test:
        rec.run(1, "NVML detection and --include (fake NVML)", phase_detect_fake)
        rec.run(0, "causal-conv1d stand-in", phase_conv_fallback)
        rec.run(9, "pass/fail rules against fakes", phase_rules)
        return 0 if all(ph["status"] == "ok" for ph in rec.phases) else 1

    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device; run --self-test on a CPU machine", file=sys.stderr)
        return 2
    os.environ.update(LAUNCH_ENV)
    wanted = {int(x) for x in args.phases.split(",") if x.strip()}
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    env = prepare_imports(work / "stub")
    from ds_wizard.core.plan.gpus import detect_gpus

    uuid = next((g.uuid for g in detect_gpus().gpus), "")
    phases: dict[int, tuple[str, Callable[[Recorder], dict[str, Any]], float]] = {
        0: ("ds-wizard doctor --json", lambda r: phase_doctor(r, env, work), 10),
        1: ("NVML detection and --include", lambda r: phase_detect(r, env), 20),
        2: ("ZeRO-2 mamba2_130m launch + from_pretrained",
            lambda r: phase_launch(r, env, work, uuid), 90),
        # in-process, with TRITON_CACHE_AUTOTUNING=1: its warm-up steps fill Triton's
        # autotuning cache on disk for the launches after it
        3: ("activations vs the memory model (warms Triton)", phase_activations, 40),
        4: ("ZeRO-3, checkpointing, both, autocast", lambda r: phase_variants(r, env, work),
            90),
        5: (f"{BIG_PRESET} throughput and MFU", lambda r: phase_mfu(r, env, work), 90),
    }
    for number in PHASE_ORDER:
        if number in wanted:
            name, fn, needs = phases[number]
            rec.run(number, name, fn, needs)
    print((args.out / "gpu_check.md").read_text(), flush=True)
    return 0 if all(ph["status"] == "ok" for ph in rec.phases) else 1


if __name__ == "__main__":
    sys.exit(main())
