"""``ds-wizard tune``: each candidate as a short real run, through the normal launch path.

A candidate is prepared by :func:`plan.prepare_run` (the same checks, run contract and
run directory as ``launch``; ``RunSpec.measure`` makes the ranks gather every rank's peak
memory and skip checkpoints and weights) and started under its own supervisor
(:func:`client.start_supervisor`), so ``ds-wizard runs`` lists it and ``ds-wizard stop``
ends it. Its processes have all ended before the next candidate starts. The search order
and the choice are pure (:mod:`ds_wizard.core.plan.tune`).

    result = run_tune(TuneRequest("tiny_mamba", num_gpus=2), on_event=print)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ds_wizard.core.base.defaults import HEADROOM, RUNS_DIR
from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.base.fsio import read_from, read_input
from ds_wizard.core.plan import tune as core
from ds_wizard.core.plan.backends import DEFAULT_BACKEND
from ds_wizard.core.plan.memory import GiB, Strategy

DEFAULT_STEPS = 4  # the first is warm-up: three timed steps
DEFAULT_CANDIDATE_TIMEOUT_S = 600.0
STOP_GRACE_S = 20.0
# before the first candidate has run: a CPU rank's start-up (imports, gloo, the engine)
# on a busy 2-core machine, plus its steps; replaced by the slowest measured candidate
FIRST_GUESS_S = 90.0


@dataclass(frozen=True)
class TuneRequest:
    """What the user asked for (CLI flags, the wizard's Measure key)."""

    preset: Any  # a name, a path, or a loaded Preset
    sets: Sequence[str] = ()
    config_path: str | Path | None = None
    num_gpus: int | None = None
    hostfile: str | Path | None = None
    global_batch: int | None = None
    headroom: float = HEADROOM
    stages: Sequence[int] | None = None
    steps: int = DEFAULT_STEPS
    max_candidates: int = core.DEFAULT_MAX_CANDIDATES
    runs_dir: str | Path = RUNS_DIR
    output: str | Path | None = "deepspeed_config.json"
    backend: str = DEFAULT_BACKEND
    candidate_timeout_s: float = DEFAULT_CANDIDATE_TIMEOUT_S
    keep_runs: bool = False
    record: bool = True  # add the result to the machine's measured record
    save_preset: str | None = None  # also write the choice into this user preset
    dry_run: bool = False  # the candidates and their predictions; nothing runs or is written


@dataclass(frozen=True)
class TuneEvent:
    """Progress, for the CLI's lines and the wizard's live view."""

    kind: str  # "plan" | "start" | "step" | "measured" | "done"
    text: str
    index: int = 0  # 1-based candidate number
    max_candidates: int = 0
    step: int = 0
    steps: int = 0
    elapsed_s: float = 0.0  # since the tune began
    bound_s: float = 0.0  # upper bound on the total
    measurement: core.Measurement | None = None


@dataclass
class _Setup:
    preset: Any
    ws: int
    global_batch: int
    start_micro: int
    strategies: list[Strategy]
    base_config: dict[str, Any]
    accel: Any
    report: Any
    limit: int | None
    limit_source: str
    predict: Callable[[dict[str, Any]], int]
    machine: Any
    precision: str


def _setup(req: TuneRequest) -> _Setup:
    from ds_wizard.core.check.checker import load_config_file
    from ds_wizard.core.config.auto import auto_configure
    from ds_wizard.core.plan.fit import config_estimate, gpu_memory_from
    from ds_wizard.core.plan.gpus import detect_gpus
    from ds_wizard.core.plan.measured import this_machine
    from ds_wizard.core.presets.overrides import load_with_overrides
    from ds_wizard.core.presets.rules import preset_precision
    from ds_wizard.core.runs.runspec import accelerator_from
    from ds_wizard.launch.plan import kernel_backend, world_size_for

    if req.steps < 2:
        raise core.TuneError(f"--steps must be at least 2 (the first is warm-up), got "
                             f"{req.steps}", "e.g. --steps 4")
    preset = load_with_overrides(req.preset, req.sets)
    report = detect_gpus()
    accel = accelerator_from(report)
    topo, _ = world_size_for(req.num_gpus, accel, hostfile=req.hostfile)
    ws = topo.total_ranks
    cuda = accel.kind == "cuda"
    gpus = report if cuda else None
    backend = kernel_backend(req.backend, accel, preset.spec.model.arch, gpus)
    precision = preset_precision(preset.spec, "auto", gpus.bf16_supported if gpus else None,
                                 accel.kind)
    if req.config_path is not None:
        base = load_config_file(req.config_path)
        if req.global_batch is not None:
            base = dict(base, train_batch_size=req.global_batch)
    else:
        base = auto_configure(preset, ws, gpu_report=gpus, global_batch=req.global_batch,
                              gpu_memory=gpu_memory_from(None, gpus), headroom=req.headroom,
                              backend=backend, device=accel.kind).config
    global_batch = int(req.global_batch or base["train_batch_size"])
    core.micro_batches(global_batch, ws)  # refuses a global batch ws does not divide
    start = int(base.get("train_micro_batch_size_per_gpu") or 1)
    zero = base.get("zero_optimization") or {}
    base_strategy = Strategy(
        int(zero.get("stage", 0)),
        (zero.get("offload_optimizer") or {}).get("device") in ("cpu", "nvme"),
        (zero.get("offload_param") or {}).get("device") in ("cpu", "nvme"))
    if req.stages:
        bad = [s for s in req.stages if s not in (0, 1, 2, 3)]
        if bad:
            raise core.TuneError(f"--stages: ZeRO stage {bad[0]} does not exist",
                                 "give stages among 0,1,2,3, e.g. --stages 1,2")
        strategies = [replace(base_strategy, zero_stage=s, offload_param=(
            base_strategy.offload_param and s == 3), offload_optimizer=(
            base_strategy.offload_optimizer and s > 0)) for s in dict.fromkeys(req.stages)]
    else:
        strategies = [base_strategy]
    spec = preset.spec
    if cuda:
        gpu = gpu_memory_from(None, gpus)
        assert gpu is not None
        est0 = config_estimate(base, spec, ws, start, backend=backend)
        context = est0.detail.get("cuda_context", 0)
        # the allocator's counters do not see the CUDA context: compare like with like
        limit: int | None = int(gpu.bytes * req.headroom) - context
        limit_source = (f"{req.headroom:.0%} of {gpu.bytes / GiB:.1f} GiB ({gpu.source}) "
                        f"less {context / GiB:.1f} GiB CUDA context")

        def predict(cfg: dict[str, Any]) -> int:
            micro = int(cfg["train_micro_batch_size_per_gpu"])
            est = config_estimate(cfg, spec, ws, micro, backend=backend)
            return est.total - est.detail.get("cuda_context", 0)
    else:
        from ds_wizard.core.base.system import SystemFactError, available_memory
        from ds_wizard.launch.host_fit import cpu_rank_bytes

        try:
            free: int | None = available_memory()
        except SystemFactError:
            free = None  # unknown RAM: measured, but not judged against a limit
        per_node = max(topo.ranks_per_node)
        limit = int(free * req.headroom / per_node) if free else None
        limit_source = (f"{req.headroom:.0%} of {free / GiB:.1f} GiB available RAM over "
                        f"{per_node} rank(s)" if free else "available RAM unknown: no limit")

        def predict(cfg: dict[str, Any]) -> int:
            return cpu_rank_bytes(cfg, spec, ws)
    return _Setup(preset, ws, global_batch, start, strategies, base, accel, report, limit,
                  limit_source, predict, this_machine(gpus), precision)


def candidate_config(setup: _Setup, cand: core.Candidate) -> dict[str, Any]:
    """The DeepSpeed config of one candidate: the plan's config with this batch triple
    and strategy (everything else, the user's --config included, unchanged)."""
    from ds_wizard.core.batch.choice import BatchChoice
    from ds_wizard.core.config.dsconfig import build_config

    s = cand.strategy
    built = build_config(setup.preset.spec, BatchChoice(cand.micro_batch, cand.grad_accum,
                                                        cand.world_size),
                         precision=setup.precision,
                         bf16_supported=getattr(setup.report, "bf16_supported", None),
                         zero_stage=s.zero_stage,
                         offload_optimizer="cpu" if s.offload_optimizer else "none",
                         offload_param="cpu" if s.offload_param else "none")
    cfg = dict(setup.base_config)
    cfg["train_batch_size"] = cand.global_batch
    cfg["train_micro_batch_size_per_gpu"] = cand.micro_batch
    cfg["gradient_accumulation_steps"] = cand.grad_accum
    cfg["zero_optimization"] = built["zero_optimization"]
    return cfg


class _Runner:
    """Runs candidates one at a time; remembers the slowest for the time bound."""

    def __init__(self, req: TuneRequest, setup: _Setup, emit: Callable[[TuneEvent], None],
                 stop: threading.Event, scratch: Path, t0: float) -> None:
        self.req, self.setup, self.emit, self.stop = req, setup, emit, stop
        self.scratch, self.t0 = scratch, t0
        self.count = 0
        self.slowest = 0.0
        self.total = 0
        self.running = False

    def bound(self) -> float:
        """Elapsed, plus every candidate that may still run at the slowest pace so far."""
        per = max(self.slowest, FIRST_GUESS_S)
        left = core.upper_bound_s(per, self.count, self.req.max_candidates, self.total)
        # the running candidate: at most as long as the slowest so far
        current = per if self.running else 0.0
        return time.monotonic() - self.t0 + left + current

    def __call__(self, cand: core.Candidate) -> core.Measurement:
        self.count += 1
        self.running = True
        cfg = candidate_config(self.setup, cand)
        predicted = self.setup.predict(cfg)
        elapsed = time.monotonic() - self.t0
        self.emit(TuneEvent("start", f"candidate {self.count}: {cand.label} (predicted peak "
                            f"{predicted / GiB:.2f} GiB)", self.count, self.req.max_candidates,
                            0, self.req.steps, elapsed, self.bound()))
        start = time.monotonic()
        try:
            m = self._run(cand, cfg, predicted)
        finally:
            self.running = False
        took = time.monotonic() - start
        m = replace(m, elapsed_s=took)
        self.slowest = max(self.slowest, took * 1.1)
        elapsed = time.monotonic() - self.t0
        self.emit(TuneEvent("measured", _measured_text(m), self.count,
                            self.req.max_candidates, self.req.steps, self.req.steps, elapsed,
                            self.bound(), m))
        return m

    def _run(self, cand: core.Candidate, cfg: dict[str, Any],
             predicted: int) -> core.Measurement:
        from ds_wizard.core.config.dsconfig import dumps
        from ds_wizard.launch.host_fit import HostMemoryRefused
        from ds_wizard.launch.plan import LaunchRefused, LaunchRequest, prepare_run

        if self.stop.is_set():
            return core.Measurement(cand, core.STOPPED, predicted, note="not started")
        s = cand.strategy
        path = self.scratch / (f"candidate-m{cand.micro_batch}-g{cand.grad_accum}-"
                               f"z{s.zero_stage}{'-oo' if s.offload_optimizer else ''}"
                               f"{'-op' if s.offload_param else ''}.json")
        path.write_text(dumps(cfg), encoding="utf-8")
        try:
            plan = prepare_run(LaunchRequest(
                self.setup.preset, self.setup.ws if self.req.hostfile is None else None,
                sets=("train.log_every=1",), config_path=path, steps=self.req.steps,
                runs_dir=self.req.runs_dir, backend=self.req.backend,
                hostfile=self.req.hostfile, measure=True, gpu_report=self.setup.report))
        except HostMemoryRefused as exc:
            return core.Measurement(cand, core.OOM, predicted,
                                    note=f"refused before launch: {exc.message}")
        except LaunchRefused as exc:
            return core.Measurement(cand, core.FAILED, predicted, note=exc.one_line())
        try:
            m = self._supervise(plan, cand, predicted)
        finally:
            if not self.req.keep_runs and plan.run_dir is not None:
                _remove_run(plan.run_dir)
        return m if self.req.keep_runs else replace(m, run_dir=None)

    def _supervise(self, plan: Any, cand: core.Candidate,
                   predicted: int) -> core.Measurement:
        from ds_wizard.core.runs import rundir
        from ds_wizard.core.runs.runstate import read_run_state
        from ds_wizard.launch.client import job_pids, start_supervisor, stop_run
        from ds_wizard.launch.supervisor import GRACEFUL_STOP, STOP_NOW

        client = start_supervisor(plan, grace_s=STOP_GRACE_S)
        log = rundir.RunPaths(plan.run_dir).log
        offset, buf, lines = client.log_offset, b"", []
        deadline = time.monotonic() + self.req.candidate_timeout_s
        asked: str | None = None
        while True:
            running = client.running()
            chunk = _read_from(log, offset)
            offset += len(chunk)
            *complete, buf = (buf + chunk).split(b"\n")
            for raw in complete:
                line = raw.decode("utf-8", errors="replace")
                lines.append(line)
                self._progress(line)
            if not running:
                break
            if self.stop.is_set() and asked is None:
                asked = "stop"
                with contextlib.suppress(ProcessLookupError):
                    os.kill(client.pid, GRACEFUL_STOP)
            elif time.monotonic() > deadline and asked != "now":
                asked = "now"
                with contextlib.suppress(ProcessLookupError):
                    os.kill(client.pid, STOP_NOW)
            time.sleep(0.25)
        assert client.proc is not None
        client.proc.wait()
        if buf:
            lines.append(buf.decode("utf-8", errors="replace"))
        if job_pids(plan.run_dir):  # the supervisor never leaves any; belt and braces
            with contextlib.suppress(DsWizardError):
                stop_run(plan.run_dir, now=True)
        state = read_run_state(plan.run_dir)
        records = _records(plan.paths.metrics)
        tps, timed, peaks = steady(records)
        peak = max(peaks) if peaks else None
        oom = core.out_of_memory(lines)
        if asked == "stop":
            return core.Measurement(cand, core.STOPPED, predicted, peak, tuple(peaks), tps,
                                    timed, note="stopped by Ctrl-C", run_dir=str(plan.run_dir))
        finished = state is not None and state.status == "finished"
        if asked == "now":
            return core.Measurement(cand, core.FAILED, predicted, peak, tuple(peaks), tps,
                                    timed, note=f"no end within "
                                    f"{self.req.candidate_timeout_s:.0f} s; killed",
                                    run_dir=str(plan.run_dir))
        status = core.verdict(finished and tps is not None, oom is not None and not finished,
                              peak, self.setup.limit)
        note = ""
        if status == core.OOM:
            note = f"out of memory: {oom}"
        elif status == core.FAILED:
            note = (state.stop_reason if state and state.stop_reason else
                    "too few steps to time" if finished else "the run failed")
        elif status == core.OVER:
            note = f"peak above the limit of {(self.setup.limit or 0) / GiB:.2f} GiB"
        return core.Measurement(cand, status, predicted, peak, tuple(peaks), tps, timed,
                                note=note, run_dir=str(plan.run_dir))

    def _progress(self, line: str) -> None:
        text = line.strip()
        if not text.startswith("step "):
            return
        try:
            step = int(text.split()[1].split("/")[0])
        except (IndexError, ValueError):
            return
        elapsed = time.monotonic() - self.t0
        self.emit(TuneEvent("step", f"candidate {self.count}: step {step}/{self.req.steps}"
                            + (" (warm-up)" if step == 1 else ""), self.count,
                            self.req.max_candidates, step, self.req.steps, elapsed,
                            self.bound()))


def _read_from(path: Path, offset: int) -> bytes:
    try:
        return read_from(path, offset, limit=1 << 20, what="train.log")
    except DsWizardError:
        return b""  # missing, not a regular file or unreadable now


def _records(path: Path) -> list[dict[str, Any]]:
    from ds_wizard.core.runs.runspec import parse_metrics

    try:
        raw = read_input(path, limit=256 << 20, what="metrics.jsonl")
    except DsWizardError:
        return []
    return [r for r in (parse_metrics(line) for line in raw.splitlines()) if r is not None]


def steady(records: Sequence[dict[str, Any]]) -> tuple[float | None, int, list[int]]:
    """(tokens/s after the warm-up step, steps timed, each rank's peak bytes) from a
    candidate's metrics records (one per step: tune runs log every step)."""
    by_step = {int(r["step"]): r for r in records if isinstance(r.get("step"), int)}
    if not by_step:
        return None, 0, []
    last = by_step[max(by_step)]
    peaks = [int(float(g) * GiB) for g in (last.get("rank_peak_gib") or [])]
    first = by_step.get(1)
    if first is None or max(by_step) < 2:
        return None, 0, peaks
    dt = float(last["elapsed_s"]) - float(first["elapsed_s"])
    tokens = int(last["tokens"]) - int(first["tokens"])
    tps = round(tokens / dt, 1) if dt > 0 else None
    return tps, max(by_step) - 1, peaks


def _remove_run(run_dir: Path) -> None:
    """A candidate's scratch run directory; kept only with --keep-runs."""
    with contextlib.suppress(OSError):
        shutil.rmtree(run_dir)


def _measured_text(m: core.Measurement) -> str:
    peak = f"peak {m.measured_peak / GiB:.2f} GiB" if m.measured_peak else "no peak"
    tps = f"{m.tokens_per_s:,.0f} tokens/s" if m.tokens_per_s else "no tokens/s"
    err = f" (model {m.error_pct:+.1f}%)" if m.error_pct is not None else ""
    note = f": {m.note}" if m.note else ""
    return f"{m.candidate.label}: {m.status}, {peak}{err}, {tps}{note}"


def run_tune(req: TuneRequest, on_event: Callable[[TuneEvent], None] | None = None,
             stop: threading.Event | None = None,
             measure: Callable[[core.Candidate], core.Measurement] | None = None,
             ) -> core.TuneResult:
    """Search, measure, choose; write the chosen config and the machine record.

    ``stop`` (set by Ctrl-C or the wizard) stops the current candidate gracefully and ends
    the search with what was measured. ``measure`` replaces the real runs (tests, the
    wizard's stand-in); everything else is as for real.
    """
    emit = on_event or (lambda e: None)
    stop = stop or threading.Event()
    t0 = time.monotonic()
    setup = _setup(req)
    check_outputs(req)  # a refusal leaves no trace: before any candidate runs
    cands = core.candidates(setup.global_batch, setup.ws, setup.strategies)
    if req.dry_run:
        return dry_run_result(req, setup, cands)
    notes = [f"limit per rank: {setup.limit_source}"]
    scratch = Path(tempfile.mkdtemp(prefix="ds-wizard-tune-"))
    runner = _Runner(req, setup, emit, stop, scratch, t0)
    runner.total = len(cands)
    micros = [c.micro_batch for c in cands if c.strategy == setup.strategies[0]]
    emit(TuneEvent("plan", f"tuning {setup.preset.name} on {setup.ws} "
                   f"{'GPU' if setup.accel.kind == 'cuda' else 'CPU'} rank(s) at global batch "
                   f"{setup.global_batch}: micro-batches {', '.join(map(str, micros))} "
                   f"({', '.join(s.label for s in setup.strategies)}); starting at "
                   f"{setup.start_micro}, at most {min(req.max_candidates, len(cands))} "
                   f"candidate(s) of {req.steps} steps", 0, req.max_candidates, 0, req.steps,
                   0.0, runner.bound()))

    def one(c: core.Candidate) -> core.Measurement:
        if measure is None:
            return runner(c)
        runner.count += 1
        m = measure(c)
        emit(TuneEvent("measured", _measured_text(m), runner.count, req.max_candidates,
                       req.steps, req.steps, time.monotonic() - t0, runner.bound(), m))
        return m

    try:
        found = core.search(cands, setup.start_micro, one, req.max_candidates)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    interrupted = stop.is_set() or any(m.status == core.STOPPED for m in found)
    chosen = core.choose(found)
    config_path = None
    if chosen is not None and req.output is not None:
        config_path = write_choice(setup, chosen.candidate, Path(req.output))
    result = core.TuneResult(
        setup.preset.name, setup.ws, setup.global_batch, setup.accel.kind,
        setup.machine.label, setup.limit, setup.limit_source, req.headroom,
        setup.start_micro, tuple(found), chosen, config_path,
        time.monotonic() - t0, interrupted, tuple(notes))
    if req.save_preset is not None and chosen is not None and not interrupted:
        from ds_wizard.core.presets.tuned import save_tuned_preset

        saved = save_tuned_preset(req.save_preset, req.preset, req.sets, result)
        result = replace(result, preset_saved=str(saved))
    if req.record and found and not interrupted:
        from ds_wizard.core.plan.measured import add

        path = add({k: v for k, v in result.to_dict().items()
                    if k not in ("config", "notes", "machine")},
                   setup.preset.spec, setup.machine)
        result = replace(result, notes=(*result.notes, f"recorded in {path}"))
    emit(TuneEvent("done", "done", runner.count, req.max_candidates, 0, req.steps,
                   result.wall_s, result.wall_s))
    return result


def check_outputs(req: TuneRequest) -> None:
    """Everything tune will write, refused now (one line) rather than after minutes of
    candidate runs: the config file, the user preset's name and file, the runs directory."""
    from ds_wizard.core.base.fsio import check_output
    from ds_wizard.core.presets.lookup import check_name
    from ds_wizard.core.presets.store import user_preset_path

    if req.output is not None:
        check_output(req.output)
    if req.save_preset is not None:
        dest = user_preset_path(check_name(req.save_preset))
        if os.path.lexists(dest):  # the user preset directory is created on first write
            check_output(dest)
    runs = Path(req.runs_dir)
    if os.path.lexists(runs) and not runs.is_dir():
        raise DsWizardError(f"--runs-dir {runs} is not a directory",
                            "give a directory (it is created when missing)")


def dry_run_result(req: TuneRequest, setup: _Setup,
                   cands: Sequence[core.Candidate]) -> core.TuneResult:
    """What a tune would measure: every candidate with the model's predicted peak, the
    search's first one and the bound on the time; nothing runs, nothing is written."""
    starts = [c for c in cands if c.micro_batch == setup.start_micro] or list(cands[:1])
    first = starts[0] if starts else None
    lines = []
    for c in cands:
        peak = setup.predict(candidate_config(setup, c))
        over = setup.limit is not None and peak > setup.limit
        lines.append(f"{c.label}: predicted peak {peak / GiB:.2f} GiB per rank"
                     + (" (over the limit: expected not to fit)" if over else "")
                     + (" (the search starts here)" if c is first else ""))
    runs = min(req.max_candidates, len(cands))
    bound = runs * req.candidate_timeout_s
    notes = (f"dry run: {len(cands)} candidate(s) at global batch {setup.global_batch}; "
             f"at most {runs} would run, {req.steps} steps each (each bounded by "
             f"--timeout {req.candidate_timeout_s:.0f} s, so at most {bound / 60:.0f} min)",
             *lines, f"limit per rank: {setup.limit_source}")
    return core.TuneResult(
        setup.preset.name, setup.ws, setup.global_batch, setup.accel.kind,
        setup.machine.label, setup.limit, setup.limit_source, req.headroom,
        setup.start_micro, (), None, None, 0.0, False, notes, dry_run=True)


def write_choice(setup: _Setup, cand: core.Candidate, output: Path) -> str:
    """Write the chosen config the way ``--auto`` does (the old file kept as .bak), after
    ``check`` has accepted it."""
    from ds_wizard.core.base.fsio import write_if_changed
    from ds_wizard.core.check.checker import check_config
    from ds_wizard.core.config.dsconfig import dumps

    cfg = candidate_config(setup, cand)
    report = check_config(cfg, setup.ws)
    if not report.valid:  # pragma: no cover - every candidate is a valid triple
        raise DsWizardError(f"internal error: the chosen config fails check: "
                            f"{report.errors[0]}")
    write_if_changed(output, dumps(cfg), backup=True)
    return str(output)


def install_ctrl_c(stop: threading.Event) -> Callable[[], None]:
    """SIGINT/SIGTERM set ``stop`` (the current candidate ends at its step); returns the
    function that puts the old handlers back."""
    def handle(signum: int, frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for s, h in previous.items():
            signal.signal(s, h)
    return restore
