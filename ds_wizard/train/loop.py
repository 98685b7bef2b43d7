"""The per-rank training program (``python -m ds_wizard.train``), started by ``deepspeed``.

    deepspeed --num_accelerators 2 --module ds_wizard.train --run-dir runs/X \\
        --deepspeed_config runs/X/ds_config.json --preset runs/X/preset.toml --steps 40

Stopping: SIGINT or SIGTERM only sets a flag. At the end of the current optimizer step
the ranks agree on it (it rides along the per-step loss all-reduce), every rank saves the
checkpoint, and the process exits 0. A second signal changes nothing; the supervisor
(``ds_wizard.launch.supervisor``) kills a rank that has not finished when its grace period ends.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.plan.backends import BACKENDS
from ds_wizard.core.runs import rundir
from ds_wizard.core.runs.metrics import MetricsWriter
from ds_wizard.core.runs.runspec import MetricsRecord, RunSpec, metrics_line, read_run_info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ds_wizard.train",
                                description="Train a Mamba preset inside a DeepSpeed rank.")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None,
                   help="set by older deepspeed launchers; the LOCAL_RANK environment "
                   "variable wins when both are set")
    p.add_argument("--preset", required=True, help="preset name or .toml path")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--run-dir", help="run directory (metrics, checkpoints, final weights)")
    p.add_argument("--deepspeed_config", "--config", dest="config",
                   help="DeepSpeed JSON (default: RUN_DIR/ds_config.json)")
    p.add_argument("--steps", type=int, default=None, help="train up to this global step")
    p.add_argument("--data", default=None, help=".txt, .jsonl, .bin or a directory")
    p.add_argument("--data-dtype", choices=["uint16", "uint32"], default=None)
    p.add_argument("--tokenizer", default=None, help="a local HF tokenizer.json")
    p.add_argument("--backend", choices=BACKENDS, default="auto")
    p.add_argument("--resume", action="store_true",
                   help="continue from RUN_DIR's latest complete checkpoint")
    p.add_argument("--num-gpus", type=int, default=None, help="world size for --dry-run")
    p.add_argument("--dry-run", action="store_true",
                   help="validate everything, print the summary, do not train")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.dry_run:
            return dry_run(args)
        return Trainer(args).run()
    except DsWizardError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr, flush=True)
        return 1


def dry_run(args: argparse.Namespace) -> int:
    """The seed document's ``train_deepspeed.py --dry_run``: the config ``--auto`` would
    build (or ``--config``, checked) and its summary. Core only: no launch package here."""
    from ds_wizard.core.base.defaults import CPU_DEFAULT_RANKS
    from ds_wizard.core.check.checker import check_config, load_config_file
    from ds_wizard.core.config.auto import auto_configure
    from ds_wizard.core.config.completeness import training_problem
    from ds_wizard.core.config.summary import model_type, summary_lines
    from ds_wizard.core.plan.fit import gpu_memory_from
    from ds_wizard.core.plan.gpus import detect_gpus
    from ds_wizard.core.plan.params import count_params
    from ds_wizard.core.presets.overrides import load_with_overrides

    preset = load_with_overrides(args.preset, args.sets)
    report = detect_gpus()
    cuda = bool(report.count or args.num_gpus)
    ws = args.num_gpus or report.count or CPU_DEFAULT_RANKS
    if args.config:
        cfg = load_config_file(args.config)
    else:
        gpus = report if report.count else None
        cfg = auto_configure(preset, ws, gpu_report=gpus, gpu_memory=gpu_memory_from(None, gpus),
                             device="cuda" if cuda else "cpu").config
    for line in summary_lines(cfg, ws, model_type=model_type(preset.spec.model.arch),
                              params=count_params(preset.spec.model),
                              config_source=args.config, dry_run=True,
                              device="GPU" if cuda else "CPU"):
        print(line, flush=True)
    if args.config and (problem := training_problem(cfg)) is not None:
        # valid for DeepSpeed, but a rank would stop on it (`ds-wizard launch` completes it)
        print(f"❌ {args.config} cannot train: {problem} (launch it with `ds-wizard launch "
              "--config`, which supplies the preset's optimizer)", flush=True)
        return 1
    return 0 if check_config(cfg, ws).valid else 1


class StopFlag:
    """Set by SIGINT/SIGTERM; read at step boundaries."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            rank = os.environ.get("RANK", "?")
            print(f"[rank {rank}] {signal.Signals(signum).name}: stopping after this step "
                  "and saving a checkpoint", file=sys.stderr, flush=True)


@dataclass
class Progress:
    step: int = 0
    tokens: int = 0
    elapsed_s: float = 0.0
    last_saved: int = -1


class Trainer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stop = StopFlag()
        self.stop.install()  # before the slow imports: a Ctrl-C during start-up still counts

    def log(self, text: str) -> None:
        if self.rank == 0:
            print(text, flush=True)

    def run(self) -> int:
        """setup → build → resume → train steps → save / export."""
        self._setup()
        self._build()
        prog = self._resume(self.engine, self.samples, self.paths, self.tdist) \
            if self.args.resume else Progress()
        start_step = prog.step
        try:
            stopped = self._train_steps(prog)
            self._finish(prog, start_step, stopped)
        finally:
            self.heartbeat.close()
            self.tracking.close()
        return 0

    # -- phases ---------------------------------------------------------------------------
    def _setup(self) -> None:
        """The run directory, the launch decision from run.json, and the process group."""
        import deepspeed
        import torch.distributed as tdist

        from ds_wizard.core.check.checker import load_config_file
        from ds_wizard.core.config.completeness import IncompleteConfig, training_problem
        from ds_wizard.core.presets.overrides import load_with_overrides
        from ds_wizard.train import ds_setup

        args = self.args
        if not args.run_dir:
            raise DsWizardError("--run-dir is required to train",
                                "use `ds-wizard launch`, which creates one")
        self.paths = paths = rundir.RunPaths(Path(args.run_dir))
        paths.checkpoints.mkdir(parents=True, exist_ok=True)
        if not os.environ.get("DS_WIZARD_VERBOSE"):
            _quiet_libraries()
        # the launch side decided and checked all of it; the rank only reads it
        self.spec = load_with_overrides(args.preset, args.sets).spec
        self.run_spec: RunSpec = read_run_info(paths.run_json).spec
        self.name = self.run_spec.preset
        self.config = load_config_file(args.config or paths.config)
        if (problem := training_problem(self.config)) is not None:
            # the launcher completes the config (core.completeness); this catches one
            # edited by hand afterwards, before 80 s of start-up end in a crash at step 1
            raise IncompleteConfig(
                f"{args.config or paths.config} cannot train: {problem}",
                "add one, or launch again with `ds-wizard launch`, which supplies the "
                "preset's")
        self.total = args.steps if args.steps is not None else self.run_spec.steps
        ds_setup.avoid_cpu_jit_ops()  # before init_distributed, which would build it
        deepspeed.init_distributed()
        # before anything allocates on the accelerator: every rank sees the same devices
        # and only LOCAL_RANK tells them apart (DeepSpeed itself sets the device only
        # inside deepspeed.initialize, after the model exists)
        from ds_wizard.train.device import select_device

        self.device_name = select_device(fallback=args.local_rank)
        self.tdist = tdist
        self.rank, self.world = tdist.get_rank(), tdist.get_world_size()
        # every rank says where it is: on a multi-node job this is the one line per node
        # that shows the nodes found each other
        print(f"[rank {self.rank}] world size {self.world}, node rank "
              f"{os.environ.get('CROSS_RANK', '0')}, local rank "
              f"{os.environ.get('LOCAL_RANK', '0')}", flush=True)
        if self.world != self.run_spec.world_size:
            raise DsWizardError(
                f"this job has {self.world} ranks but the run was planned for "
                f"{self.run_spec.world_size} (its batch and checkpoints assume that)",
                "launch it with the hostfile or --num-gpus it was planned with")

    def _build(self) -> None:
        """Model, data and the DeepSpeed engine."""
        import deepspeed
        import torch
        from deepspeed.accelerator import get_accelerator

        from ds_wizard.core.plan.params import padded_vocab
        from ds_wizard.core.runs.data import ShardedSamples, load_tokenizer, load_tokens
        from ds_wizard.train import ds_setup, recipe
        from ds_wizard.train import model as models

        args, spec = self.args, self.spec
        # follow DeepSpeed's accelerator, not torch: DS_ACCELERATOR=cpu means CPU ranks
        # even on a machine with GPUs
        self.cuda = cuda = get_accelerator().device_name() == "cuda"
        torch.manual_seed(self.run_spec.seed)
        from ds_wizard.train import kernels

        # the backend the launch side decided (run.json); a rank that cannot import it
        # stops here with the reason, it never falls back to another path
        wanted = kernels.planned_backend(self.run_spec.backend_resolved, args.backend, cuda)
        self.backend = models.choose_backend(wanted, cuda=cuda, arch=spec.model.arch)
        kernels.verify(self.backend.name, spec.model.arch)
        self.log(f"backend: {self.backend.name} ({self.backend.reason})"
                 + ("; mambapy parallel scan" if self.backend.name == "transformers"
                    and spec.model.arch == "mamba1" and models.mambapy_available() else ""))
        stage = models.zero_stage_of(self.config)
        model = models.build_model(spec.model, self.backend.name, self.config)
        self.log(f"model: {self.name}, {models.param_check(model, spec.model)}, built "
                 + ("partitioned (ZeRO-3 zero.Init)" if stage == 3 else "on the CPU")
                 + f"; this rank's device: {self.device_name}")
        # ds-wizard's own, for both backends, because the memory model counts on it
        if spec.train.activation_checkpointing:
            blocks = recipe.enable_block_checkpointing(model)
            self.log(f"activation checkpointing: on, one checkpoint per block ({blocks})")
        groups = recipe.weight_decay_groups(model)
        decayed = sum(getattr(p, 'ds_numel', p.numel()) for p in groups[0]['params'])
        self.log(f"weight decay: {decayed:,} elements "
                 "decayed; A_log, D, dt bias, biases, norms and the embedding are not")
        if models.param_dtype_of(self.config) is not None:
            # docs/gpu-training.md#precision-of-a_log-d-and-dt_bias: the decision
            self.log("precision: DeepSpeed stores A_log, D and dt_bias in 16 bits like every "
                     "parameter (fp32 master copies keep the updates); "
                     "--set train.precision=autocast keeps all parameters fp32")

        tok = load_tokenizer(args.tokenizer)
        vocab = padded_vocab(spec.model.vocab_size, spec.model.pad_vocab_size_multiple)
        source = load_tokens(args.data, tok, vocab, dtype=args.data_dtype)
        self.samples = ShardedSamples(source.tokens, spec.train.seq_len, self.rank,
                                      self.world, self.run_spec.seed)
        self.log(f"data: {source.description}: {len(source.tokens):,} tokens, "
                 f"{self.samples.per_rank:,} samples of {self.samples.seq_len} per rank "
                 "per epoch")

        ds_cfg, lr_scheduler = ds_setup.client_scheduler(self.config)
        # issue 21: after a change of world size, the segment's universal checkpoint
        from ds_wizard.train import reshape

        self.segment = reshape.current_segment(self.paths)
        self.pending = reshape.pending_universal(self.paths, self.world) \
            if args.resume else None
        if self.pending is not None:
            ds_cfg = reshape.with_load_universal(ds_cfg)
        from ds_wizard.train.optim import client_optimizer

        ds_cfg, optimizer = client_optimizer(self.run_spec.optimizer, ds_cfg, groups)
        if optimizer is not None:
            self.log("optimizer: torch.optim.AdamW(fused=True) as DeepSpeed's client "
                     "optimizer (no CUDA toolkit to build DeepSpeed's FusedAdam here)")
        self.engine, _, _, _ = deepspeed.initialize(
            model=model, model_parameters=None if optimizer is not None else groups,
            optimizer=optimizer, config=ds_cfg, lr_scheduler=lr_scheduler,
        )
        engine = self.engine
        # the reported peak is the training peak, not the start-up transient
        get_accelerator().reset_peak_memory_stats()
        self.micro = engine.train_micro_batch_size_per_gpu()
        self.gas = engine.gradient_accumulation_steps()
        self.global_batch = engine.train_batch_size()
        self.log(f"batch: {self.global_batch} = {self.micro} × {self.gas} × {self.world}, "
                 f"seq_len {self.samples.seq_len}, "
                 f"ZeRO stage {engine.zero_optimization_stage()}")
        self._observers()

    def _observers(self) -> None:
        """The heartbeat the supervisor watches for stalls, and the trackers' events
        (issue 22: ``train/heartbeat.py``, ``train/tracking.py``)."""
        from ds_wizard.train.heartbeat import Heartbeat
        from ds_wizard.train.tracking import Tracking

        self.heartbeat = Heartbeat(self.paths.root, self.rank,
                                   int(os.environ.get("LOCAL_RANK", "0")))
        self.tracking = Tracking(self.engine, self.rank)
        self.tracking.start(world=self.world, micro=self.micro, gas=self.gas,
                            global_batch=self.global_batch, seq_len=self.samples.seq_len,
                            zero=dict(self.config.get("zero_optimization") or {}))

    def _train_steps(self, prog: Progress) -> bool:
        """Train to ``self.total``; True when stopped by a signal."""
        import torch
        from deepspeed.accelerator import get_accelerator

        from ds_wizard.core.plan.params import flops_per_token
        from ds_wizard.train import reshape
        from ds_wizard.train.model import logits_of

        engine, samples, tdist, paths = self.engine, self.samples, self.tdist, self.paths
        spec, total, gas, micro = self.spec, self.total, self.gas, self.micro
        beat = self.heartbeat.beat
        tokens_per_step = self.global_batch * samples.seq_len
        fpt = flops_per_token(spec.model)
        peak = _peak_flops(torch, self.config) if self.cuda else None
        device = engine.device
        log_every, save_every = spec.train.log_every, spec.train.save_every

        metrics = None
        if self.rank == 0:
            # cut back to the step this run continues from: no step is logged twice
            metrics = MetricsWriter(paths.metrics, keep_through_step=prog.step)
            for note in metrics.repair.notes():
                self.log(note)
        self.log(f"training steps {prog.step + 1}..{total} "
                 f"(log every {log_every}, checkpoint every {save_every})")
        self.t_start = t_start = time.perf_counter()
        t_mark, step_mark = t_start, prog.step
        first_step = prog.step + 1
        stopped = False
        try:
            while prog.step < total:
                lr = float(engine.optimizer.param_groups[0]["lr"])
                loss_sum = torch.zeros((), device=device, dtype=torch.float32)
                for _ in range(gas):
                    beat(prog.step + 1, "data")
                    ids = torch.from_numpy(samples.next_batch(micro)).to(device)
                    beat(prog.step + 1, "forward")
                    logits = logits_of(engine, ids)
                    loss = torch.nn.functional.cross_entropy(
                        logits[:, :-1].reshape(-1, logits.size(-1)).float(),
                        ids[:, 1:].reshape(-1),
                    )
                    beat(prog.step + 1, "backward")
                    engine.backward(loss)
                    beat(prog.step + 1, "step")
                    engine.step()
                    loss_sum += loss.detach().float()
                prog.step += 1
                prog.tokens += tokens_per_step
                # one all-reduce per step carries the loss (averaged over micro-steps and
                # ranks) and the stop flag, so every rank stops at the same step
                packed = torch.stack([loss_sum / gas, torch.tensor(
                    float(self.stop.signum is not None), device=device)])
                tdist.all_reduce(packed)
                loss_mean, stop_votes = (packed / torch.tensor(
                    [self.world, 1.0], device=device)).tolist()
                stopped = stop_votes > 0
                if prog.step % log_every == 0 or prog.step == total or stopped:
                    now = time.perf_counter()
                    dt = max(now - t_mark, 1e-9)
                    n = prog.step - step_mark
                    tps = round(n * tokens_per_step / dt, 2)
                    record = MetricsRecord(
                        step=prog.step, loss=round(loss_mean, 6), lr=lr,
                        grad_norm=_float(engine.get_global_grad_norm()),
                        tokens_per_s=tps,
                        samples_per_s=round(n * self.global_batch / dt, 3),
                        elapsed_s=round(prog.elapsed_s + now - t_start, 3),
                        tokens=prog.tokens, epoch=samples.epoch,
                        max_mem_alloc_gib=round(
                            get_accelerator().max_memory_allocated() / 2**30, 3)
                        if self.cuda else None,
                        mfu=round(fpt * tps / self.world / peak, 4)
                        if self.cuda and peak else None,
                        **reshape.segment_fields(self.segment, prog.step),
                        **self._peak_fields(torch, device),
                    )
                    t_mark, step_mark = now, prog.step
                    if metrics is not None:
                        metrics.write(metrics_line(record))
                    self.tracking.record(record)
                    gn = record.grad_norm
                    self.log(f"step {prog.step:>6}/{total}  loss {loss_mean:.4f}  "
                             f"lr {lr:.2e}  grad_norm "
                             f"{'-' if gn is None else f'{gn:.3f}'}  "
                             f"{record.tokens_per_s:,.0f} tok/s  "
                             f"{record.elapsed_s:.1f}s")
                if prog.step == first_step and self.cuda:
                    # the first step's peak holds one-off work (Triton autotuning and its
                    # argument clones); later records report the steady training peak
                    get_accelerator().reset_peak_memory_stats()
                if stopped:
                    break
                if prog.step % save_every == 0 and not self.run_spec.measure:
                    t_save = time.perf_counter()
                    self._save(engine, samples, paths, prog, t_start, tdist)
                    # throughput windows measure training: the save does not count
                    t_mark += time.perf_counter() - t_save
        finally:
            if metrics is not None:
                metrics.close()
        return stopped

    def _peak_fields(self, torch: Any, device: Any) -> dict[str, Any]:
        """Peak-memory fields of a metrics record (ds_wizard.train.peaks); every rank's
        only in a `tune` run, where gathering them is a collective on each logged step."""
        from deepspeed.accelerator import get_accelerator

        from ds_wizard.train.peaks import gather_peaks, own_peaks

        mine = own_peaks(get_accelerator(), self.cuda)
        out: dict[str, Any] = {"peak_rss_gib": round(mine[2] / 2**30, 4)}
        if self.cuda:
            out["max_mem_reserved_gib"] = round(mine[1] / 2**30, 4)
        if self.run_spec.measure:
            ranks = gather_peaks(self.tdist, torch, device, mine, self.world)
            out["rank_peak_gib"] = [round((r[1] if self.cuda else r[2]) / 2**30, 4)
                                    for r in ranks]
        return out

    def _finish(self, prog: Progress, start_step: int, stopped: bool) -> None:
        """The last checkpoint, then the exported weights unless stopped early."""
        engine, paths, tdist = self.engine, self.paths, self.tdist
        if self.run_spec.measure:
            # a tune candidate: nothing of it is kept but its metrics
            self.log(f"measured: {prog.step} steps (tune run: no checkpoint, no weights)")
            tdist.destroy_process_group()
            return
        t_start = getattr(self, "t_start", time.perf_counter())
        if prog.step > prog.last_saved and prog.step > start_step:
            self._save(engine, self.samples, paths, prog, t_start, tdist)
        if stopped:
            self.log(f"stopped at step {prog.step}: checkpoint "
                     f"{rundir.checkpoint_tag(prog.step)} saved; continue with "
                     f"`ds-wizard launch --resume {paths.root}`")
        else:
            self._export(engine, self.backend.name, paths, tdist)
            self.log(f"done: {prog.step} steps; weights in {paths.final}")
        tdist.destroy_process_group()

    def _save(self, engine: Any, samples: Any, paths: rundir.RunPaths, prog: Progress,
              t_start: float, tdist: Any) -> None:
        tag = rundir.checkpoint_tag(prog.step)
        state = {"ds_wizard": {
            "step": prog.step, "tokens": prog.tokens, "data": samples.state_dict(),
            "elapsed_s": prog.elapsed_s + time.perf_counter() - t_start,
        }}
        self.heartbeat.beat(prog.step, "checkpoint")
        if self.rank == 0:
            # a tag written again (after a fallback) is not vouched for until it is done
            rundir.clear_marker(paths.checkpoints, tag)
        engine.save_checkpoint(str(paths.checkpoints), tag=tag, client_state=state)
        # every rank has returned from save_checkpoint only after this barrier; only then
        # is the tag complete and may be marked so
        tdist.barrier()
        files = self._hash_tag(paths.checkpoints / tag)
        if self.rank == 0:
            rundir.write_marker(paths.checkpoints, tag, prog.step,
                              {"world_size": self.world, "tokens": prog.tokens}, files=files)
        prog.last_saved = prog.step
        self.log(f"checkpoint {tag} saved")

    def _hash_tag(self, tag_dir: Path) -> dict[str, Any]:
        """The marker's record of every file in ``tag_dir``; each rank hashes its share."""
        from ds_wizard.core.runs import integrity

        names: list[Any] = [integrity.tag_files(tag_dir, exclude=(rundir.MARKER,))
                            if self.rank == 0 else None]
        self.tdist.broadcast_object_list(names, src=0)
        mine = integrity.digest_files(
            tag_dir, integrity.share_of(names[0], (self.rank, self.world)))
        gathered: list[Any] = [None] * self.world
        self.tdist.all_gather_object(gathered, mine)
        return integrity.manifest({k: v for part in gathered for k, v in part.items()})

    def _choose_checkpoint(self, paths: rundir.RunPaths, tdist: Any) -> str | None:
        """The newest complete tag whose every file matches its marker, agreed by all ranks.

        Runs before anything is loaded: DeepSpeed's torch.load(weights_only=False) would
        run whatever a replaced file holds. Each rank hashes its share of the files.
        """
        found: list[Any] = [None]
        if self.rank == 0:
            found[0] = rundir.scan_checkpoints(paths.checkpoints)
        # every rank judges the same tags and markers, whatever its view of the disk
        tdist.broadcast_object_list(found, src=0)
        complete = [c for c in found[0] if c.complete]
        newest = complete[-1].step if complete else -1
        for c in found[0]:
            if not c.complete and c.step > newest:
                self.log(f"skipping incomplete checkpoint {c.tag} (no completion marker)")
        for info in reversed(complete):
            mine = rundir.check_checkpoint(info, share=(self.rank, self.world))
            gathered: list[Any] = [None] * self.world
            tdist.all_gather_object(gathered, mine)
            problems = sorted({p for part in gathered for p in part})
            if not problems:
                if (note := rundir.unverified_note(info)) is not None:
                    self.log(f"warning: {note}")
                return info.tag
            self.log(f"warning: {rundir.damaged_note(info, problems)}")
        return None

    def _resume(self, engine: Any, samples: Any, paths: rundir.RunPaths, tdist: Any) -> Progress:
        if self.pending is not None:
            from ds_wizard.train.reshape import verify_universal

            tag: str | None = verify_universal(self.pending, paths, self.rank, self.world,
                                               tdist)
        else:
            tag = self._choose_checkpoint(paths, tdist)
        if tag is None:
            raise rundir.RunError(f"no intact checkpoint in {paths.checkpoints}",
                                "start a new run instead of --resume")
        load_path, client = engine.load_checkpoint(str(paths.checkpoints), tag=tag)
        if load_path is None or not client or "ds_wizard" not in client:
            raise rundir.RunError(f"checkpoint {tag} in {paths.checkpoints} did not load")
        st = client["ds_wizard"]
        for note in samples.load_state_dict(st["data"]):
            self.log(f"warning: {note}")
        prog = Progress(step=int(st["step"]), tokens=int(st.get("tokens", 0)),
                        elapsed_s=float(st.get("elapsed_s", 0.0)), last_saved=int(st["step"]))
        self.log(f"resumed from {tag}: continuing at step {prog.step + 1}")
        return prog

    def _export(self, engine: Any, backend: str, paths: rundir.RunPaths, tdist: Any) -> None:
        from ds_wizard.train.model import export_pretrained, gather_zero3_state_dict

        module = engine.module
        self.heartbeat.beat(self.total, "checkpoint")  # exporting: busy, not stalled
        if engine.zero_optimization_stage() == 3:
            # every rank takes part; DeepSpeed gathers one module at a time onto rank 0
            # and copies it to the CPU, so no rank ever holds the whole model on device
            state = gather_zero3_state_dict(engine)
            if self.rank == 0:
                export_pretrained(module, backend, paths.final, state_dict=state)
        elif self.rank == 0:
            export_pretrained(module, backend, paths.final)
        if self.rank == 0:
            from ds_wizard.core.base.fsio import atomic_write_text
            from ds_wizard.core.config.dsconfig import dumps

            tok = self.args.tokenizer
            info = {"backend": backend, "tokenizer": tok or "bytes (token id = byte value)"}
            atomic_write_text(paths.final / "ds_wizard.json", dumps(info))
        tdist.barrier()


def _quiet_libraries() -> None:
    """Keep the log readable: the backend line already says which Mamba path runs."""
    import warnings

    from deepspeed.utils import logger as ds_logger
    from transformers.utils import logging as hf_logging

    ds_logger.setLevel(logging.WARNING)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.distributed")


def _float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return round(out, 6) if out == out else None  # NaN → None keeps the JSON valid


def _peak_flops(torch: Any, config: dict[str, Any]) -> float | None:
    """The dense peak of rank 0's GPU for the precision the matmuls run in."""
    from ds_wizard.core.plan.flops import compute_precision, peak_flops

    return peak_flops(torch.cuda.get_device_name(), compute_precision(config))



