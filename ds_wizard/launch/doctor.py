"""The doctor's probes: what this machine (and every hostfile host) really has.

Everything that runs a subprocess or reads the system lives here; the verdicts are in
``ds_wizard.core.runs.doctor``. Two probes are slow enough to cache: importing the kernels
in a fresh interpreter (``python -m ds_wizard.train.kernels``, about 2 s) and asking nvcc
its version. Their results are kept in a plain JSON file in the user cache directory,
keyed by a fingerprint of the environment (interpreter, search path, CUDA variables and
the files the kernel packages are imported from), so a second launch pays nothing and
any change of install probes again.

``python -m ds_wizard.launch.doctor --facts --master ADDR`` prints this host's versions,
GPU count and whether ADDR is reachable, as JSON: ``doctor --hostfile`` runs it on every
host over ssh, the way DeepSpeed's runner reaches them.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import resource
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ds_wizard import __version__
from ds_wizard.core.base import system
from ds_wizard.core.base.defaults import HEADROOM, RUNS_DIR
from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.base.fsio import atomic_write_text, read_json, read_text
from ds_wizard.core.plan.backends import BackendDecision, resolve_backend
from ds_wizard.core.runs import doctor as verdict
from ds_wizard.core.runs.doctor import (
    INFO,
    PACKAGES,
    Check,
    CollectiveResult,
    DoctorReport,
    HostFacts,
    HostReport,
    KernelProbe,
    OptimizerDecision,
    Toolkit,
)

if TYPE_CHECKING:
    from ds_wizard.core.plan.gpus import GpuInventory
    from ds_wizard.core.runs.runspec import Accelerator
    from ds_wizard.launch.plan import LaunchRequest, PreparedRun

CACHE_FILE = "doctor.json"
CACHE_FORMAT = 1
KERNEL_PROBE_TIMEOUT_S = 120.0
SSH_TIMEOUT_S = 20.0
# modules whose install decides what the kernel probe finds
KERNEL_DISTS = ("torch", "mamba_ssm", "causal_conv1d", "causal_conv1d_cuda",
                "selective_scan_cuda", "triton", "deepspeed", "transformers")
# where torch's cpp_extension looks when CUDA_HOME is unset and nvcc is not on PATH
DEFAULT_CUDA_HOMES = ("/usr/local/cuda",)
ENV_KEYS = ("PYTHONPATH", "LD_LIBRARY_PATH", "CUDA_HOME", "CUDA_PATH", "PATH",
            "TORCH_EXTENSIONS_DIR", "DS_ACCELERATOR", "MAMBA_FORCE_BUILD")


# -- cache -----------------------------------------------------------------------------------

def cache_path() -> Path:
    from ds_wizard.core.presets.spec_cache import ENV_CACHE_DIR

    override = os.environ.get(ENV_CACHE_DIR, "").strip()
    if override:
        return Path(override).expanduser() / CACHE_FILE
    from platformdirs import user_cache_path

    return user_cache_path("ds-wizard") / CACHE_FILE


def _origin_stamp(module: str) -> str:
    """Where a fresh interpreter would import ``module`` from (this environment's
    PYTHONPATH first, as the probe's interpreter sees it), and that file's stamp."""
    from importlib.machinery import PathFinder

    search = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p] + sys.path
    try:
        spec = PathFinder.find_spec(module, search)
    except (ImportError, ValueError):
        return f"{module}:?"
    if spec is None:
        return f"{module}:-"
    where = spec.origin or next(iter(spec.submodule_search_locations or []), "")
    try:
        st = os.stat(where)
        return f"{module}:{where}:{st.st_mtime_ns}:{st.st_size}"
    except OSError:
        return f"{module}:{where}"


def fingerprint(*extra: str) -> str:
    """The environment as far as the kernel and toolkit probes can see it."""
    h = hashlib.sha256()
    for part in (sys.executable, sys.version, __version__, str(CACHE_FORMAT),
                 *(f"{k}={os.environ.get(k, '')}" for k in ENV_KEYS),
                 *(_origin_stamp(m) for m in KERNEL_DISTS), *extra):
        h.update(part.encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()


def cached(kind: str, key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``compute()``'s result for ``key``, from the cache file when it holds it."""
    path = cache_path()
    try:
        data = read_json(path, limit=4 << 20, what="doctor cache")
        if not isinstance(data, dict):
            data = {}
    except DsWizardError:  # absent, not a regular file, too big or not JSON: no cache
        data = {}
    entry = data.get(f"{kind}:{key}")
    if isinstance(entry, dict):
        return entry
    value = compute()
    if value.get("probe_error"):
        return value  # a timeout says nothing lasting about the install
    data = {k: v for k, v in data.items() if not k.startswith(f"{kind}:")} if len(data) > 64 \
        else data
    data[f"{kind}:{key}"] = value
    with contextlib.suppress(OSError):  # an unwritable cache only costs the next probe
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(data, indent=1) + "\n")
    return value


# -- versions --------------------------------------------------------------------------------

def torch_build() -> dict[str, str | None]:
    """torch's CUDA and ROCm versions, read from ``torch/version.py`` without importing
    torch (that costs seconds)."""
    out: dict[str, str | None] = {"cuda": None, "hip": None}
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return out
    if spec is None or not spec.submodule_search_locations:
        return out
    path = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    try:
        text = read_text(path, limit=1 << 20, what="torch version file")
    except DsWizardError:
        return out
    for line in text.splitlines():
        m = re.match(r"^(cuda|hip)\s*(?::[^=]*)?=\s*(.+)$", line.strip())
        if m:
            with contextlib.suppress(ValueError, SyntaxError):
                value = ast.literal_eval(m.group(2).strip())
                out[m.group(1)] = str(value) if value else None
    return out


def local_versions(driver: str | None = None) -> dict[str, str | None]:
    """Python, ds-wizard and the packages that must agree across nodes."""
    out: dict[str, str | None] = {"python": platform.python_version(), "ds-wizard": __version__}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    build = torch_build()
    out["torch CUDA"] = build["cuda"]
    out["torch ROCm"] = build["hip"]
    if driver is not None:
        out["NVIDIA driver"] = driver
    return out


def package_versions() -> dict[str, str | None]:
    """The kernel and training packages installed here (run.json's ``kernels`` where no
    kernel probe ran: CPU ranks, or planning for GPUs elsewhere)."""
    versions = local_versions()
    return {k: versions.get(k) for k in PACKAGES}


# versions every host must share (the driver and torch's build may legitimately differ)
COMPARED = ("python", "ds-wizard", *PACKAGES)


# -- kernels ---------------------------------------------------------------------------------

def _kernel_probe(requested: str, arch: str, capability: tuple[int, int] | None,
                  timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "ds_wizard.train.kernels", "--backend", requested,
           "--arch", arch, "--cuda"]
    if capability is not None:
        cmd += ["--capability", f"{capability[0]}.{capability[1]}"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    except subprocess.TimeoutExpired:
        return {"backend": None, "reason": "", "probe_error": f"timed out after {timeout:.0f} s"}
    line = next((ln for ln in reversed(done.stdout.splitlines()) if ln.startswith("{")), None)
    if done.returncode != 0 or line is None:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"backend": None, "reason": "",
                "probe_error": f"exit {done.returncode}: {tail[-300:]}"}
    return json.loads(line)


def probe_kernels(requested: str, arch: str, capability: tuple[int, int] | None, *,
                  timeout: float = KERNEL_PROBE_TIMEOUT_S, use_cache: bool = True) -> KernelProbe:
    """The backend a CUDA rank will run here, found by a fresh interpreter importing the
    kernels exactly as the rank does."""
    cap = f"{capability[0]}.{capability[1]}" if capability else "-"

    def run() -> dict[str, Any]:
        return _kernel_probe(requested, arch, capability, timeout)

    if not use_cache:
        return KernelProbe.from_dict(run())
    key = fingerprint("kernels", requested, arch, cap)
    return KernelProbe.from_dict(cached("kernels", key, run))


def rank_backend(requested: str, accel: Accelerator, arch: str,
                 report: GpuInventory | None) -> tuple[BackendDecision, KernelProbe | None]:
    """The backend decided once, on the launch side. Where the ranks are this machine's
    GPUs, by the rank's own imports in a subprocess; otherwise by the planner's rule (CPU
    ranks run transformers; a login node plans for the nodes' kernels)."""
    here = accel.kind == "cuda" and report is not None and report.count > 0
    if not here:
        return resolve_backend(requested, cuda=accel.kind == "cuda", arch=arch,
                               here=False), None
    assert report is not None
    cc = min(g.compute_capability for g in report.gpus)
    found = probe_kernels(requested, arch, cc)
    if found.backend is None:
        # the requested backend cannot run here: plan for it anyway, the doctor refuses
        return BackendDecision(requested if requested != "auto" else "mamba_ssm",
                               found.reason or "the kernel probe failed"), found
    return BackendDecision(found.backend, found.reason, found.conv_fallback), found


# -- toolkit ---------------------------------------------------------------------------------

def _nvcc_path(env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(CUDA_HOME, nvcc) as DeepSpeed's op builder finds them (torch's CUDA_HOME rule)."""
    home = env.get("CUDA_HOME") or env.get("CUDA_PATH")
    if home and (Path(home) / "bin" / "nvcc").is_file():
        return home, str(Path(home) / "bin" / "nvcc")
    found = shutil.which("nvcc", path=env.get("PATH"))
    if found:
        return home or str(Path(found).resolve().parent.parent), found
    for default in DEFAULT_CUDA_HOMES:
        if (Path(default) / "bin" / "nvcc").is_file():
            return default, str(Path(default) / "bin" / "nvcc")
    return home, None


def _nvcc_version(nvcc: str) -> str | None:
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True,
                             timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"release (\d+\.\d+)", out)
    return m.group(1) if m else None


def probe_toolkit(env: Mapping[str, str] | None = None) -> Toolkit:
    from ds_wizard.core.runs.jit_ops import CPU_ADAM, FUSED_ADAM, extension_dirs, prebuilt_ops

    env = os.environ if env is None else env
    home, nvcc = _nvcc_path(env)
    version = None
    if nvcc is not None:
        key = fingerprint("nvcc", nvcc, _origin_stamp_file(nvcc))
        version = cached("nvcc", key, lambda: {"version": _nvcc_version(nvcc)}).get("version")
    cxx = shutil.which("c++", path=env.get("PATH")) or shutil.which("g++", path=env.get("PATH"))
    ninja = bool(shutil.which("ninja", path=env.get("PATH"))) or \
        importlib.util.find_spec("ninja") is not None
    torch_cuda = torch_build()["cuda"]
    # torch caches builds per flavour (py311_cu124, py311_cpu): only this torch's count
    flavour = "_cu" + torch_cuda.replace(".", "") if torch_cuda else "_cpu"
    built = tuple(op for op in (FUSED_ADAM, CPU_ADAM)
                  if any((d / op / f"{op}.so").is_file() for d in extension_dirs(env)
                         if d.name.endswith(flavour)))
    return Toolkit(torch_cuda=torch_cuda, nvcc=nvcc, nvcc_version=version,
                   cuda_home=home, cxx=cxx, ninja=ninja, prebuilt=prebuilt_ops(),
                   cached=built)


def _origin_stamp_file(path: str) -> str:
    try:
        st = os.stat(path)
        return f"{st.st_mtime_ns}:{st.st_size}"
    except OSError:
        return "-"


def decide_optimizer(cfg: Mapping[str, Any], accel: Accelerator, *, user_config: bool,
                     here: bool = True) -> OptimizerDecision:
    """The optimizer the ranks will run (CPU ranks: torch's AdamW, set by resolve_config).
    ``here``: the GPUs are this machine's, so its CUDA toolkit is the one that builds."""
    cuda = accel.kind == "cuda"
    return verdict.decide_optimizer(cfg, cuda=cuda,
                                    toolkit=probe_toolkit() if cuda and here else None,
                                    user_config=user_config)


# -- host ------------------------------------------------------------------------------------

def _limit(which: int) -> int | None:
    try:
        soft, _ = resource.getrlimit(which)
    except (OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else int(soft)


def host_facts(runs_dir: str | Path = RUNS_DIR) -> HostFacts:
    mem = system.memory()  # unreadable RAM is a one-line SystemFactError
    shm = None
    with contextlib.suppress(system.SystemFactError):
        if os.path.ismount("/dev/shm"):
            shm = system.disk_of("/dev/shm").total
    disk = None
    with contextlib.suppress(system.SystemFactError):
        disk = system.disk_of(Path(runs_dir).expanduser()).free
    nproc = _limit(resource.RLIMIT_NPROC) if hasattr(resource, "RLIMIT_NPROC") else None
    return HostFacts(ram_available=mem.available, ram_total=mem.total,
                     shm_bytes=shm, disk_free=disk, nofile=_limit(resource.RLIMIT_NOFILE),
                     nproc=nproc)


# -- the fast checks (launch runs these) -----------------------------------------------------

def plan_facts(plan: PreparedRun) -> dict[str, Any]:
    from ds_wizard.core.plan.params import count_params

    run = plan.run
    return {"preset": run.preset, "world size": run.world_size, "nodes": run.nodes,
            "accelerator": f"{plan.accelerator.kind} ({plan.accelerator.reason})",
            "backend requested": run.backend,
            "backend a rank will run": run.backend_resolved or run.backend,
            "optimizer": run.optimizer or "-",
            "batch": f"{run.global_batch} = {run.micro_batch} × {run.grad_accum} × "
                     f"{run.world_size}",
            "ZeRO stage": run.zero_stage, "precision": run.precision,
            "parameters": f"{count_params(plan.spec.model):,}",
            "config": run.config_source or "built from the preset"}


def host_ram_check(plan: PreparedRun, facts: HostFacts, headroom: float = HEADROOM) -> Check:
    """Host RAM against the plan's peak host use, for CPU and GPU ranks alike."""
    from ds_wizard.core.plan.fit import config_estimate
    from ds_wizard.core.plan.params import count_params

    run, topo = plan.run, plan.topology
    per_node = max(topo.ranks_per_node) if topo is not None else run.world_size
    if plan.accelerator.kind == "cpu":
        from ds_wizard.launch.host_fit import cpu_ranks_need

        need = cpu_ranks_need(plan.config, plan.spec, per_node)
        return verdict.judge_host_ram(need, facts, headroom, f"{per_node} CPU rank(s)")
    backend = run.backend_resolved or ("mamba_ssm" if run.backend == "auto" else run.backend)
    est = config_estimate(plan.config, plan.spec, run.world_size, run.micro_batch,
                          backend=backend)
    param_bytes = 2 if run.precision in ("bf16", "fp16") else 4
    need = verdict.gpu_host_need(count_params(plan.spec.model), backend=backend,
                                 zero_stage=run.zero_stage, param_bytes=param_bytes,
                                 ranks_per_node=per_node, cpu_per_node=est.cpu_per_node)
    return verdict.judge_host_ram(need, facts, headroom,
                                  f"{per_node} GPU rank(s) building {backend} models on the CPU")


def fast_checks(plan: PreparedRun, kernels: KernelProbe | None,
                optimizer: OptimizerDecision | None, runs_dir: str | Path,
                facts: HostFacts | None = None, *, versions: Mapping[str, Any] | None = None
                ) -> DoctorReport:
    """Kernels, ops, host RAM, /dev/shm, disk and limits for ``plan`` on this machine."""
    from ds_wizard.core.plan.params import count_params

    facts = facts or host_facts(runs_dir)
    run = plan.run
    cuda = plan.accelerator.kind == "cuda"
    per_node = max(plan.topology.ranks_per_node) if plan.topology else run.world_size
    checks: list[Check] = []
    if kernels is not None:
        checks.append(verdict.judge_kernels(kernels, run.backend, cuda))
    elif cuda:
        checks.append(Check("kernels", "Mamba kernels", INFO,
                            f"no GPU here: planning for the nodes' kernels "
                            f"({run.backend_resolved or run.backend})"))
    else:
        checks.append(Check("kernels", "Mamba kernels", verdict.OK,
                            "CPU ranks: transformers' PyTorch Mamba path (no kernels)"))
    if optimizer is not None:
        checks.append(optimizer.check)
    if run.nodes == 1:
        checks.append(host_ram_check(plan, facts))
        checks.append(verdict.judge_shm(facts, cuda=cuda, ranks_per_node=per_node))
    else:
        # the ranks run on the hostfile's nodes, which need not include this machine
        checks.append(Check("host_ram", "host RAM", INFO, f"{run.nodes} nodes: each node's "
                            "memory is its own (`ds-wizard doctor --hostfile` reaches them)"))
    param_bytes = 2 if run.precision in ("bf16", "fp16") else 4
    checks.append(verdict.judge_disk(facts, verdict.checkpoint_bytes(
        count_params(plan.spec.model), param_bytes), _shown(runs_dir)))
    if run.nodes == 1:
        checks.append(verdict.judge_limits(facts, per_node))
    return DoctorReport(tuple(checks), dict(versions or local_versions()), plan_facts(plan),
                        backend=run.backend_resolved, optimizer=run.optimizer)


DOCTOR_MD = "doctor.md"


def gate(plan: PreparedRun, runs_dir: str | Path) -> PreparedRun:
    """``launch``'s fast checks, before any rank starts: the plan with their report.

    On one node a failure writes RUN_DIR/doctor.md, records the run as failed (so ``runs``
    says why) and refuses with the fix. A multi-node job's ranks start on the hostfile's
    nodes (or where Slurm puts them), not necessarily here: what this machine lacks goes
    into the plan's notes, and ``doctor --hostfile`` checks the nodes themselves.
    """
    from ds_wizard.core.runs.runstate import FAILED, RunState, now_iso, write_run_state
    from ds_wizard.launch.plan import LaunchRefused

    report = fast_checks(plan, plan.kernels, plan.optimizer, runs_dir)
    if report.can_run:
        return replace(plan, doctor=report)
    if plan.run.nodes > 1:
        notes = tuple(f"doctor: ✘ {c.title}: {c.detail} (fix: {c.fix}); check the nodes "
                      "with `ds-wizard doctor --hostfile`" for c in report.failures)
        return replace(plan, doctor=report, notes=plan.notes + notes)
    message, fix = report.refusal()
    if plan.run_dir is not None:
        atomic_write_text(plan.run_dir / DOCTOR_MD, report.markdown(home=str(Path.home())))
        write_run_state(plan.run_dir, RunState(
            status=FAILED, supervisor_pid=os.getpid(), started=now_iso(), ended=now_iso(),
            exit_code=1, stop_reason=f"refused before launch: {message}",
            host=socket.gethostname()))
    raise LaunchRefused(f"refused before launch: {message}",
                        f"{fix} (or --no-doctor to launch anyway)")


def _shown(path: str | Path) -> str:
    return verdict.scrub(str(path), str(Path.home()))


# -- collectives -----------------------------------------------------------------------------

def run_collectives(world_size: int, backend: str, *, timeout: float = 20.0,
                    nbytes: int | None = None,
                    start: Sequence[int] | None = None) -> CollectiveResult:
    """All-reduce over ``world_size`` local ranks (``python -m ds_wizard.launch.collective``),
    each in its own process group; every process is gone when this returns. ``start``:
    the ranks to start (all of them; a test leaves one out to see it named)."""
    import signal

    from ds_wizard.launch.command import free_port

    nbytes = nbytes or (64 << 20 if backend == "nccl" else 16 << 20)
    port = free_port()
    procs = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if backend == "gloo":
        env["CUDA_VISIBLE_DEVICES"] = ""
    ranks = list(range(world_size)) if start is None else list(start)
    for rank in ranks:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "ds_wizard.launch.collective", "--rank", str(rank),
             "--world", str(world_size), "--port", str(port), "--backend", backend,
             "--bytes", str(nbytes), "--timeout", str(timeout)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            start_new_session=True))
    deadline = time.monotonic() + timeout + 15  # + the interpreters' start-up
    outs: list[str] = []
    errs: list[str] = []
    try:
        for p in procs:
            try:
                out, err = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                out, err = p.communicate()
            outs.append(out)
            errs.append(err)
    finally:
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    joined, result, error = [], None, None
    for rank, out in zip(ranks, outs, strict=True):
        for line in out.splitlines():
            if not line.startswith("{"):
                continue
            msg = json.loads(line)
            if msg.get("joined"):
                joined.append(rank)
            if "seconds" in msg and rank == 0:
                result = msg
            if msg.get("error") and error is None:
                error = f"rank {rank}: {msg['error']}"
    if error is None:
        error = next((f"rank {r}: {e.strip().splitlines()[-1]}"
                      for r, p, e in zip(ranks, procs, errs, strict=True)
                      if p.returncode not in (0, None) and e.strip()), None)
    if result is None:
        return CollectiveResult(backend, world_size, tuple(joined), nbytes,
                                error=error or "no result")
    return CollectiveResult(backend, world_size, tuple(joined), nbytes,
                            seconds=result["seconds"], latency_s=result["latency_s"])


# -- other hosts -----------------------------------------------------------------------------

def ssh_command(host: str, remote: str) -> list[str]:
    """What DeepSpeed's runner needs to work: ssh without any prompt."""
    return ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", host, remote]


def facts_command(master: str) -> str:
    """The remote command: this interpreter, this working directory and PYTHONPATH, as
    DeepSpeed's pdsh runner exports them to every host."""
    parts = [f"cd {shlex.quote(os.getcwd())}"]
    if os.environ.get("PYTHONPATH"):
        parts.append(f"export PYTHONPATH={shlex.quote(os.environ['PYTHONPATH'])}")
    parts.append(f"{shlex.quote(sys.executable)} -m ds_wizard.launch.doctor --facts "
                 f"--master {shlex.quote(master)}")
    return " && ".join(parts)


def probe_host(host: str, slots: int, master: str, timeout: float = SSH_TIMEOUT_S) -> HostReport:
    try:
        done = subprocess.run(ssh_command(host, facts_command(master)), capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return HostReport(host, slots, False, "ssh is not installed here")
    except subprocess.TimeoutExpired:
        return HostReport(host, slots, False, f"no answer within {timeout:.0f} s")
    line = next((ln for ln in reversed(done.stdout.splitlines()) if ln.startswith("{")), None)
    if done.returncode == 255 or (line is None and done.returncode != 0 and
                                  "ds_wizard" not in done.stderr):
        why = (done.stderr.strip().splitlines() or [f"ssh exit {done.returncode}"])[-1]
        return HostReport(host, slots, False, why[-200:])
    if line is None:
        why = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return HostReport(host, slots, True, f"ds-wizard did not answer ({why[-200:]})")
    facts = json.loads(line)
    return HostReport(host, slots, True, versions=facts.get("versions", {}),
                      gpus=facts.get("gpus"), master_reachable=facts.get("master_reachable"))


def address_reachable(addr: str) -> bool:
    """The address resolves and this host has a route to it (a UDP connect sends nothing)."""
    try:
        infos = socket.getaddrinfo(addr, 29500, type=socket.SOCK_DGRAM)
    except OSError:
        return False
    for family, kind, proto, _, sockaddr in infos:
        try:
            with socket.socket(family, kind, proto) as s:
                s.connect(sockaddr)
            return True
        except OSError:
            continue
    return False


def this_host_facts(master: str) -> dict[str, Any]:
    from ds_wizard.core.plan.gpus import detect_gpus

    report = detect_gpus()
    versions = local_versions()
    return {"versions": {k: versions.get(k) for k in COMPARED}, "gpus": report.count,
            "driver": report.driver_version, "master_reachable": address_reachable(master)}


def master_address(topo_hosts: Sequence[str], given: str | None) -> str | None:
    """``--master-addr``, else the hostfile's first host (DeepSpeed's runner would take the
    first address of ``hostname -I`` there, which can be a docker or IPoIB address)."""
    return given or (topo_hosts[0] if topo_hosts else None)


# -- the whole doctor ------------------------------------------------------------------------

@dataclass(frozen=True)
class DoctorRequest:
    launch: LaunchRequest
    master_addr: str | None = None
    collectives: bool = False
    collective_timeout: float = 20.0


def run_doctor(req: DoctorRequest) -> DoctorReport:
    """Everything ``ds-wizard doctor`` checks, for the job ``req.launch`` describes."""
    from ds_wizard.core.plan.gpus import detect_gpus
    from ds_wizard.core.runs.runspec import accelerator_from
    from ds_wizard.launch.plan import prepare_run

    r = req.launch
    report = r.gpu_report or (detect_gpus() if r.gpus is None else detect_gpus(visible=r.gpus))
    # this machine's accelerator (a dry run would plan `--num-gpus 4` for a GPU machine);
    # with a hostfile, the nodes' (a login node without GPUs plans for GPU nodes)
    accel = r.accelerator or (None if r.hostfile is not None else accelerator_from(report))
    plan = prepare_run(replace(r, dry_run=True, gpu_report=report, accelerator=accel,
                               doctor=False, check_data=False))
    versions = local_versions(report.driver_version)
    doc = plan.doctor
    if doc is None:
        doc = fast_checks(plan, plan.kernels, plan.optimizer, r.runs_dir, versions=versions)
    checks = list(doc.checks)
    checks.insert(0, Check("versions", "versions", verdict.OK, ", ".join(
        f"{k} {v}" for k, v in versions.items() if v)))
    if plan.topology is not None and plan.topology.hosts:
        names = [h.name for h in plan.topology.hosts]
        master = master_address(names, req.master_addr) or "127.0.0.1"
        cuda = plan.accelerator.kind == "cuda"
        local = {k: versions.get(k) for k in COMPARED}
        for h in plan.topology.hosts:
            checks.append(verdict.judge_host(probe_host(h.name, h.slots, master), local,
                                             master, cuda=cuda))
    if req.collectives:
        per_node = max(plan.topology.ranks_per_node) if plan.topology else plan.world_size
        backend = "nccl" if plan.accelerator.kind == "cuda" and report.count else "gloo"
        res = run_collectives(max(per_node, 1) if backend == "nccl" else per_node, backend,
                              timeout=req.collective_timeout)
        checks.append(verdict.judge_collectives(res, req.collective_timeout))
    return DoctorReport(tuple(checks), versions, doc.plan, backend=doc.backend,
                        optimizer=doc.optimizer)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ds_wizard.launch.doctor",
                                description="This host's facts for `ds-wizard doctor "
                                "--hostfile`, as JSON.")
    p.add_argument("--facts", action="store_true", required=True)
    p.add_argument("--master", required=True)
    args = p.parse_args(argv)
    print(json.dumps(this_host_facts(args.master)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

