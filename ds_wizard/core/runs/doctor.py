"""``ds-wizard doctor``'s verdicts: can this machine (and every node) run the planned job?

Pure: every function here judges facts that ``ds_wizard.launch.doctor`` gathered (versions,
the kernel import a rank does, the CUDA toolkit, host memory, disk, limits, the other
hosts) and returns :class:`Check` rows, each with one fix when it fails. The report model
(:class:`DoctorReport`) is what ``--json`` prints and ``--report`` writes as Markdown.

Severity: ``fail`` means the job cannot run as planned (exit 1, ``launch`` refuses);
``warn`` means it runs but worse than it could; ``ok`` and ``info`` say what was found.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ds_wizard.core.runs.jit_ops import CPU_ADAM, FUSED_ADAM, uses_deepspeed_adam

OK, INFO, WARN, FAIL = "ok", "info", "warn", "fail"
GiB = 1 << 30
MiB = 1 << 20

# the distributions whose versions are compared and reported (name on PyPI)
PACKAGES: tuple[str, ...] = ("torch", "deepspeed", "transformers", "mamba-ssm",
                             "causal-conv1d", "triton")
# mamba-ssm 2.2.5 imports causal_conv1d.cpp_functions, which appears in causal-conv1d 1.5.2;
# mamba-ssm 2.2.0-2.2.4 imports causal_conv1d_cuda (docs/gpu.md)
MIN_MAMBA_SSM = (2, 2, 5)
MIN_CAUSAL_CONV1D = (1, 5, 2)
# one rank's Python + torch + deepspeed + transformers before any tensor (launch/host_fit.py)
RANK_PROCESS_BYTES = GiB // 2 + GiB // 8
# NCCL puts its intra-node buffers in /dev/shm; docker's 64 MiB default fails at init
MIN_SHM_BYTES = 512 * MiB
MIN_NOFILE = 1024
THREADS_PER_RANK = 64  # torch, OMP, NCCL and gloo threads, counted against RLIMIT_NPROC
# checkpoint bytes per parameter beyond the stored parameters: fp32 master + Adam moments
CHECKPOINT_OPTIMIZER_BYTES = 12

# what run.json's ``optimizer`` says, and the rank does
OPT_DEEPSPEED_FUSED = "deepspeed_fused_adam"
OPT_DEEPSPEED_CPU = "deepspeed_cpu_adam"
OPT_TORCH_FUSED = "torch_fused_adamw"  # torch.optim.AdamW(fused=True), a client optimizer
OPT_TORCH = "torch_adamw"  # DeepSpeed's torch_adam: torch.optim.AdamW
OPT_CONFIG = "config"  # another optimizer the config names; DeepSpeed builds it
OPTIMIZER_TEXT = {
    OPT_DEEPSPEED_FUSED: "DeepSpeed's FusedAdam (JIT-built on first use)",
    OPT_DEEPSPEED_CPU: "DeepSpeed's CPUAdam for the offloaded optimizer (JIT-built)",
    OPT_TORCH_FUSED: "torch.optim.AdamW(fused=True) given to DeepSpeed as a client optimizer "
                     "(no compiler needed)",
    OPT_TORCH: "torch.optim.AdamW through DeepSpeed's torch_adam",
    OPT_CONFIG: "the optimizer the config names",
}


@dataclass(frozen=True)
class Check:
    """One row of the doctor's answer."""

    id: str  # stable key for scripts: "kernels", "ops", "host_ram", "host:node-b" …
    title: str
    status: str  # OK | INFO | WARN | FAIL
    detail: str
    fix: str | None = None  # one fix, for WARN and FAIL

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def version_tuple(text: str | None) -> tuple[int, ...] | None:
    """``2.2.6.post3`` → (2, 2, 6); ``12.4`` → (12, 4); None for anything unreadable."""
    if not text:
        return None
    parts = re.findall(r"\d+", text.split("+")[0])[:3]
    return tuple(int(p) for p in parts) if parts else None


# -- the kernels a rank will run -------------------------------------------------------------

@dataclass(frozen=True)
class KernelProbe:
    """What a fresh interpreter found importing the kernels as a rank does
    (``python -m ds_wizard.train.kernels``)."""

    backend: str | None  # the backend a rank will run; None: the requested one cannot run
    reason: str
    conv_fallback: bool = False
    errors: Mapping[str, str] = field(default_factory=dict)  # module → "Type: message"
    none_functions: Sequence[str] = ()  # mamba-ssm's causal-conv1d bindings that are None
    versions: Mapping[str, str | None] = field(default_factory=dict)
    probe_error: str | None = None  # the probe itself did not finish (timeout, crash)

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "reason": self.reason,
                "conv_fallback": self.conv_fallback, "errors": dict(self.errors),
                "none_functions": list(self.none_functions), "versions": dict(self.versions),
                "probe_error": self.probe_error}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KernelProbe:
        return cls(backend=data.get("backend"), reason=str(data.get("reason", "")),
                   conv_fallback=bool(data.get("conv_fallback")),
                   errors=dict(data.get("errors") or {}),
                   none_functions=tuple(data.get("none_functions") or ()),
                   versions=dict(data.get("versions") or {}),
                   probe_error=data.get("probe_error"))


REINSTALL_KERNELS = ("pip install --no-build-isolation --force-reinstall "
                     "'mamba-ssm>=2.2.5' 'causal-conv1d>=1.5.2' (built against this torch; "
                     "docs/gpu.md)")


def judge_kernels(probe: KernelProbe, requested: str, cuda: bool) -> Check:
    """The backend a rank will run. An installed kernel that does not load is a failure
    even where ``auto`` could fall back: the ranks would silently run the PyTorch path,
    several times the activations the plan was sized for."""
    title = "Mamba kernels (imported as a rank imports them)"
    if probe.probe_error:
        return Check("kernels", title, FAIL, f"the kernel probe did not finish: "
                     f"{probe.probe_error}", "run `python -m ds_wizard.train.kernels` to see "
                     "why importing the kernels hangs or crashes")
    if not cuda:
        return Check("kernels", title, OK, f"backend a rank will run: {probe.backend} "
                     f"({probe.reason})")
    if probe.none_functions:
        conv = probe.versions.get("causal-conv1d")
        return Check("kernels", title, FAIL,
                     f"mamba-ssm imports, but its causal-conv1d functions are None "
                     f"({', '.join(probe.none_functions)}): causal-conv1d {conv or '?'} lacks "
                     "what this mamba-ssm imports, and step 1 would fail with "
                     "'NoneType' object is not callable",
                     "pip install --no-build-isolation 'causal-conv1d>=1.5.2' "
                     "'mamba-ssm>=2.2.5'")
    broken = {m: e for m, e in probe.errors.items()
              if not e.startswith(("ModuleNotFoundError", "not installed"))}
    if broken:
        what = "; ".join(f"{m}: {e}" for m, e in broken.items())
        abi = any("undefined symbol" in e for e in broken.values())
        detail = (f"installed but does not load ({what})"
                  + ("; built against another torch" if abi else "")
                  + (f"; a rank would run {probe.backend}" if probe.backend else ""))
        return Check("kernels", title, FAIL, detail, REINSTALL_KERNELS)
    if probe.backend is None:
        return Check("kernels", title, FAIL, probe.reason, REINSTALL_KERNELS)
    too_old = _too_old(probe.versions)
    if too_old:
        return Check("kernels", title, FAIL, too_old, REINSTALL_KERNELS)
    if probe.backend == "transformers" and requested == "auto":
        return Check("kernels", title, WARN, f"backend a rank will run: transformers "
                     f"({probe.reason})", REINSTALL_KERNELS)
    note = "; ds-wizard's PyTorch causal conv stands in" if probe.conv_fallback else ""
    return Check("kernels", title, OK, f"backend a rank will run: {probe.backend} "
                 f"({probe.reason}){note}")


def _too_old(versions: Mapping[str, str | None]) -> str | None:
    ssm = version_tuple(versions.get("mamba-ssm"))
    conv = version_tuple(versions.get("causal-conv1d"))
    if ssm is not None and ssm < MIN_MAMBA_SSM:
        return (f"mamba-ssm {versions['mamba-ssm']} imports causal_conv1d_cuda directly; "
                "ds-wizard needs mamba-ssm >= 2.2.5")
    if conv is not None and conv < MIN_CAUSAL_CONV1D:
        return (f"causal-conv1d {versions['causal-conv1d']} has no cpp_functions, which "
                "mamba-ssm >= 2.2.5 imports; ds-wizard needs causal-conv1d >= 1.5.2")
    return None


# -- DeepSpeed's JIT ops and the optimizer --------------------------------------------------

@dataclass(frozen=True)
class Toolkit:
    """What DeepSpeed's op builder needs to compile an op here."""

    torch_cuda: str | None  # torch.version.cuda ("12.4"), None for a CPU/ROCm build
    nvcc: str | None  # path of nvcc found (CUDA_HOME/bin, then PATH)
    nvcc_version: str | None  # "12.4"
    cuda_home: str | None
    cxx: str | None  # a C++ compiler on PATH
    ninja: bool  # torch's cpp_extension builds with ninja
    prebuilt: Mapping[str, bool] = field(default_factory=dict)  # ops compiled at install
    cached: Sequence[str] = ()  # ops already in the torch-extensions cache

    def cuda_problem(self) -> str | None:
        """Why a CUDA op cannot be built here (None: it can)."""
        if self.torch_cuda is None:
            return "torch here is not a CUDA build"
        if self.nvcc is None:
            return "no nvcc (CUDA_HOME is unset and nvcc is not on PATH)"
        want, have = version_tuple(self.torch_cuda), version_tuple(self.nvcc_version)
        if not want or not have or want[0] != have[0]:
            return (f"nvcc {self.nvcc_version or '?'} does not match torch's CUDA "
                    f"{self.torch_cuda} (DeepSpeed raises CUDAMismatchException)")
        return self.cpp_problem()

    def cpp_problem(self) -> str | None:
        if self.cxx is None:
            return "no C++ compiler (c++/g++) on PATH"
        if not self.ninja:
            return "ninja is not installed (torch builds extensions with it)"
        return None

    def ready(self, op: str) -> bool:
        return bool(self.prebuilt.get(op)) or op in self.cached


@dataclass(frozen=True)
class OptimizerDecision:
    name: str  # one of the OPT_* constants
    check: Check


def decide_optimizer(cfg: Mapping[str, Any], *, cuda: bool, toolkit: Toolkit | None,
                     user_config: bool) -> OptimizerDecision:
    """Which optimizer the ranks will run, and whether it can be built here.

    A config ds-wizard built keeps its Adam settings but, without a working toolkit, GPU
    ranks run torch's fused AdamW (no compiler) instead of DeepSpeed's FusedAdam. A user's
    ``--config`` that asks for DeepSpeed's Adam is the user's choice: ds-wizard does not
    swap it, it refuses with the fix.
    """
    title = "DeepSpeed ops and optimizer"
    opt = cfg.get("optimizer") if isinstance(cfg.get("optimizer"), Mapping) else None
    if opt is None:
        return OptimizerDecision(OPT_CONFIG, Check("ops", title, INFO,
                                                   "the config names no optimizer"))
    if not uses_deepspeed_adam(cfg):
        params = opt.get("params") if isinstance(opt.get("params"), Mapping) else {}
        name = OPT_TORCH if params.get("torch_adam") else OPT_CONFIG
        what = OPTIMIZER_TEXT[name] if name == OPT_TORCH else f"{opt.get('type')} (config)"
        return OptimizerDecision(name, Check("ops", title, OK, f"{what}; nothing to compile"))
    zero = cfg.get("zero_optimization") if isinstance(cfg.get("zero_optimization"),
                                                      Mapping) else {}
    off = zero.get("offload_optimizer") if isinstance(zero.get("offload_optimizer"),
                                                      Mapping) else {}
    offload = off.get("device") in ("cpu", "nvme")
    op = CPU_ADAM if offload else FUSED_ADAM
    name = OPT_DEEPSPEED_CPU if offload else OPT_DEEPSPEED_FUSED
    if toolkit is None and cuda and not offload and not user_config:
        # planning for GPUs elsewhere: their toolkit is unknown, torch's needs none
        return OptimizerDecision(OPT_TORCH_FUSED, Check(
            "ops", title, OK, f"{OPTIMIZER_TEXT[OPT_TORCH_FUSED]}: the GPU machine's CUDA "
            "toolkit cannot be checked from here"))
    if toolkit is None or toolkit.ready(op):
        state = "prebuilt" if toolkit is not None and toolkit.prebuilt.get(op) else \
            "cached" if toolkit is not None else "not checked here"
        return OptimizerDecision(name, Check("ops", title, OK,
                                             f"{OPTIMIZER_TEXT[name]}: {op} {state}"))
    problem = toolkit.cpp_problem() if offload or not cuda else toolkit.cuda_problem()
    if problem is None:
        return OptimizerDecision(name, Check(
            "ops", title, OK, f"{OPTIMIZER_TEXT[name]}: {op} builds here on first use "
            "(minutes; launch shows its progress)"))
    if offload:
        return OptimizerDecision(name, Check(
            "ops", title, FAIL, f"ZeRO offload needs DeepSpeed's {op}, which cannot be built "
            f"here: {problem}", "install a C++ compiler and ninja (apt install g++ "
            "ninja-build), or drop offload_optimizer"))
    if user_config:
        return OptimizerDecision(name, Check(
            "ops", title, FAIL, f"the config plans DeepSpeed's FusedAdam ({op}), which cannot "
            f"be built here: {problem}",
            f"install the CUDA {toolkit.torch_cuda or ''} toolkit and set CUDA_HOME, or set "
            "optimizer.params.torch_adam=true, or launch without --config (ds-wizard then "
            "uses torch's fused AdamW)"))
    return OptimizerDecision(OPT_TORCH_FUSED, Check(
        "ops", title, OK, f"{OPTIMIZER_TEXT[OPT_TORCH_FUSED]}: DeepSpeed's FusedAdam cannot "
        f"be built here ({problem})"))


# -- the host --------------------------------------------------------------------------------

@dataclass(frozen=True)
class HostFacts:
    ram_available: int | None
    ram_total: int | None
    shm_bytes: int | None
    disk_free: int | None  # in the runs directory (or the nearest existing parent)
    nofile: int | None  # soft limits; None: unlimited or unknown
    nproc: int | None


def gpu_host_need(params: int, *, backend: str, zero_stage: int, param_bytes: int,
                  ranks_per_node: int, cpu_per_node: int = 0) -> int:
    """Host bytes GPU ranks of one node hold at once while they start.

    Every rank builds its model on the CPU before DeepSpeed moves it (train/model.py):
    mamba_ssm in the dtype DeepSpeed stores it in, transformers in fp32. Under ZeRO-3,
    transformers' classes are partitioned as they are built, so no full copy exists.
    Offloaded optimizer states (``cpu_per_node``) come on top.
    """
    if zero_stage == 3 and backend == "transformers":
        copy = 0
    elif backend == "mamba_ssm":
        copy = params * param_bytes
    else:
        copy = params * 4
    return ranks_per_node * (RANK_PROCESS_BYTES + copy) + cpu_per_node


def judge_host_ram(need: int, facts: HostFacts, headroom: float, what: str) -> Check:
    title = "host RAM"
    if facts.ram_available is None:
        return Check("host_ram", title, INFO, "available memory could not be read")
    detail = (f"{what} need about {need / GiB:.1f} GiB; {facts.ram_available / GiB:.1f} GiB "
              "available")
    if need <= facts.ram_available * headroom:
        return Check("host_ram", title, OK, detail)
    return Check("host_ram", title, FAIL, detail, "free memory, use fewer ranks per node, "
                 "or a smaller preset (ZeRO-3 builds transformers models partitioned)")


def judge_shm(facts: HostFacts, *, cuda: bool, ranks_per_node: int) -> Check:
    title = "/dev/shm"
    if facts.shm_bytes is None:
        return Check("shm", title, INFO, "/dev/shm is not mounted")
    detail = f"{facts.shm_bytes / MiB:,.0f} MiB"
    if cuda and ranks_per_node > 1 and facts.shm_bytes < MIN_SHM_BYTES:
        return Check("shm", title, FAIL, f"{detail}: NCCL's intra-node buffers need more "
                     f"than {MIN_SHM_BYTES // MiB} MiB", "run the container with "
                     "--shm-size=8g (or --ipc=host)")
    return Check("shm", title, OK, detail)


def checkpoint_bytes(params: int, param_bytes: int) -> int:
    """One checkpoint of every rank: the stored parameters plus fp32 master and Adam."""
    return params * (param_bytes + CHECKPOINT_OPTIMIZER_BYTES)


def judge_disk(facts: HostFacts, need: int, where: str) -> Check:
    title = "disk for checkpoints"
    if facts.disk_free is None:
        return Check("disk", title, INFO, f"free space in {where} could not be read")
    detail = (f"{facts.disk_free / GiB:,.1f} GiB free in {where}; one checkpoint is about "
              f"{need / GiB:,.2f} GiB")
    if facts.disk_free >= need:
        return Check("disk", title, OK, detail)
    return Check("disk", title, FAIL, detail, "free space there, or pass --runs-dir on a "
                 "larger disk")


def judge_limits(facts: HostFacts, ranks_per_node: int) -> Check:
    title = "open files and processes"
    parts = [f"open files {facts.nofile if facts.nofile is not None else 'unlimited'}",
             f"processes {facts.nproc if facts.nproc is not None else 'unlimited'}"]
    if facts.nofile is not None and facts.nofile < MIN_NOFILE:
        return Check("limits", title, FAIL, f"{', '.join(parts)}: fewer than {MIN_NOFILE} "
                     "open files", "ulimit -n 65536 (or raise nofile in "
                     "/etc/security/limits.conf)")
    need = ranks_per_node * THREADS_PER_RANK
    if facts.nproc is not None and facts.nproc < need:
        return Check("limits", title, FAIL, f"{', '.join(parts)}: {ranks_per_node} rank(s) "
                     f"start about {need} threads", f"ulimit -u {max(need * 4, 4096)}")
    return Check("limits", title, OK, ", ".join(parts))


# -- collectives -----------------------------------------------------------------------------

@dataclass(frozen=True)
class CollectiveResult:
    backend: str  # "gloo" | "nccl"
    world_size: int
    joined: Sequence[int]  # ranks that joined the group
    bytes: int = 0
    seconds: float | None = None  # mean time of one all-reduce of ``bytes``
    latency_s: float | None = None  # mean time of a one-element all-reduce
    error: str | None = None

    @property
    def bus_bandwidth(self) -> float | None:
        """NCCL-tests' bus bandwidth for all-reduce: size/time × 2(n−1)/n, bytes/s."""
        if not self.seconds or self.world_size < 2:
            return None
        n = self.world_size
        return self.bytes / self.seconds * 2 * (n - 1) / n


def judge_collectives(res: CollectiveResult, timeout_s: float) -> Check:
    title = f"collectives ({res.backend}, {res.world_size} ranks)"
    missing = [r for r in range(res.world_size) if r not in set(res.joined)]
    if missing:
        return Check("collectives", title, FAIL, f"rank(s) {', '.join(map(str, missing))} did "
                     f"not join within {timeout_s:.0f} s" + (f" ({res.error})" if res.error
                                                              else ""),
                     "check the master address and port, firewalls between nodes, and "
                     "NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME")
    if res.error or res.seconds is None:
        return Check("collectives", title, FAIL, f"all-reduce failed: {res.error}",
                     "run with NCCL_DEBUG=INFO to see which transport fails")
    bw = res.bus_bandwidth
    lat = f"{res.latency_s * 1e6:,.0f} µs" if res.latency_s is not None else "?"
    return Check("collectives", title, OK,
                 f"all-reduce of {res.bytes / MiB:.0f} MiB: bus bandwidth "
                 f"{(bw or 0) / 1e9:.2f} GB/s, latency {lat}")


# -- other hosts -----------------------------------------------------------------------------

@dataclass(frozen=True)
class HostReport:
    """One hostfile host as seen over ssh (``python -m ds_wizard.launch.doctor --facts``)."""

    host: str
    slots: int
    reachable: bool
    error: str | None = None
    versions: Mapping[str, str | None] = field(default_factory=dict)
    gpus: int | None = None
    master_reachable: bool | None = None


def judge_host(h: HostReport, local: Mapping[str, str | None], master: str, *,
               cuda: bool) -> Check:
    cid, title = f"host:{h.host}", f"host {h.host}"
    if not h.reachable:
        return Check(cid, title, FAIL, f"not reachable over ssh without a prompt "
                     f"({h.error or 'no answer'})", f"ssh-copy-id {h.host} and accept its host "
                     "key (DeepSpeed's runner uses ssh -o BatchMode)")
    if h.error:
        return Check(cid, title, FAIL, f"reachable, but the probe failed: {h.error}",
                     f"install the same environment on {h.host} (same python path)")
    differ = [f"{k} {h.versions.get(k) or 'absent'} (here {local.get(k) or 'absent'})"
              for k in sorted(set(local) | set(h.versions))
              if (h.versions.get(k) or None) != (local.get(k) or None)]
    if differ:
        return Check(cid, title, FAIL, "versions differ: " + "; ".join(differ),
                     f"install the same versions on {h.host} as here")
    if h.master_reachable is False:
        return Check(cid, title, FAIL, f"cannot reach the master address {master}",
                     "pass --master-addr with an address every node can reach")
    if cuda and h.gpus is not None and h.gpus < h.slots:
        return Check(cid, title, FAIL, f"{h.gpus} GPU(s) but slots={h.slots}",
                     f"set slots={h.gpus} for {h.host} in the hostfile")
    gpus = f", {h.gpus} GPU(s)" if cuda and h.gpus is not None else ""
    return Check(cid, title, OK, f"reachable, same versions{gpus}, master {master} "
                 "reachable")


# -- the report ------------------------------------------------------------------------------

@dataclass(frozen=True)
class DoctorReport:
    """Everything ``ds-wizard doctor`` found, in the order it is shown."""

    checks: tuple[Check, ...]
    versions: Mapping[str, str | None]
    plan: Mapping[str, Any]  # preset, world size, accelerator, backend, optimizer …
    backend: str | None = None  # the backend a rank will run
    optimizer: str | None = None  # OPT_* the ranks will use

    @property
    def can_run(self) -> bool:
        return not any(c.failed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.failed]

    def to_dict(self) -> dict[str, Any]:
        return {"can_run": self.can_run, "backend": self.backend, "optimizer": self.optimizer,
                "versions": dict(self.versions), "plan": dict(self.plan),
                "checks": [c.to_dict() for c in self.checks]}

    def refusal(self) -> tuple[str, str]:
        """(message, fix) for a launch that must not start: the first failure."""
        first = self.failures[0]
        more = f" (and {len(self.failures) - 1} more: `ds-wizard doctor`)" \
            if len(self.failures) > 1 else ""
        return f"{first.title}: {first.detail}{more}", first.fix or "see `ds-wizard doctor`"

    def markdown(self, home: str | None = None) -> str:
        """The report a user pastes into an issue: versions, the plan, every check. No
        environment variables, no host names beyond the hostfile's, and ``home`` (the
        user's home directory) written as ``~``."""
        return scrub(self._markdown(), home)

    def _markdown(self) -> str:
        lines = ["# ds-wizard doctor", "",
                 f"**Verdict:** {'the job can run' if self.can_run else 'the job cannot run'}",
                 "", "## Versions", "", "| package | version |", "| --- | --- |"]
        lines += [f"| {k} | {v or 'absent'} |" for k, v in self.versions.items()]
        lines += ["", "## Plan", "", "| | |", "| --- | --- |"]
        lines += [f"| {k} | {_cell(v)} |" for k, v in self.plan.items()]
        lines += ["", "## Checks", "", "| | check | result | fix |", "| --- | --- | --- | --- |"]
        mark = {OK: "✔", INFO: "·", WARN: "!", FAIL: "✘"}
        lines += [f"| {mark[c.status]} | {_cell(c.title)} | {_cell(c.detail)} | "
                  f"{_cell(c.fix or '')} |" for c in self.checks]
        if self.failures:
            lines += ["", "## Failures", ""]
            lines += [f"- **{c.title}**: {c.detail}. Fix: {c.fix}" for c in self.failures]
        return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    return str(value).replace("|", "/").replace("\n", " ")


def scrub(text: str, home: str | None) -> str:
    """A detail line without the user's home directory (reports are pasted publicly)."""
    return text.replace(home, "~") if home and len(home) > 1 else text
