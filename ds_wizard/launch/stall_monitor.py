"""The supervisor's side of stall detection: one turn per loop of ``RunDaemon.run``.

Kept out of ``supervisor.py`` so that the daemon only calls :meth:`StallMonitor.turn` and
:meth:`StallMonitor.ended`. A stall sets state.json's status to ``stalled`` with its
``stall`` record and writes a line to train.log (what ``attach`` follows); the autopsy runs
in a thread (py-spy takes a second or so per rank) and its verdict joins the record. A
stall that ends sets the status back to ``running`` and appends the episode to ``stalls``.
With ``--on-stall stop`` the job is killed once the autopsy is saved: a rank stuck in a
collective cannot reach the step boundary where the ranks save a checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ds_wizard.core.runs.stall import (
    ON_STALL,
    AutopsySummary,
    Stall,
    StallPolicy,
    duration,
    parse_stall_after,
)

if TYPE_CHECKING:
    from ds_wizard.core.runs.runstate import RunState
    from ds_wizard.launch.supervisor import RunDaemon, Supervisor

NO_CHECKPOINT = ("no checkpoint could be taken: the other ranks wait in a collective the "
                 "stalled rank never joins")


@dataclass(frozen=True)
class StallOptions:
    """What the supervisor watches for: the rule, what to do, and how many ranks beat."""

    policy: StallPolicy
    on_stall: str = "wait"
    ranks: int = 1

    def argv(self) -> list[str]:
        return ["--stall-after", self.policy.arg(), "--on-stall", self.on_stall,
                "--ranks", str(self.ranks)]

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> StallOptions | None:
        if args.stall_after is None:
            return None
        policy = parse_stall_after(args.stall_after, StallPolicy())
        return None if policy is None else cls(policy, args.on_stall, args.ranks)


def add_stall_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stall-after", default=None, help="K x median step time and floor")
    p.add_argument("--on-stall", choices=ON_STALL, default="wait")
    p.add_argument("--ranks", type=int, default=1, help="ranks that write heartbeats")


def run_trackers(run_dir: Path) -> dict[str, str]:
    """The run's trackers and where their files go, from its ds_config.json."""
    from ds_wizard.core.base.errors import DsWizardError
    from ds_wizard.core.base.fsio import read_json
    from ds_wizard.core.config.monitor import tracker_dirs
    from ds_wizard.core.runs.rundir import RunPaths

    try:
        cfg = read_json(RunPaths(run_dir).config, limit=16 << 20, what="ds_config.json")
    except DsWizardError:
        return {}
    return tracker_dirs(cfg, run_dir) if isinstance(cfg, dict) else {}


class StallMonitor:
    def __init__(self, daemon: RunDaemon, job: Supervisor, log: Path) -> None:
        from ds_wizard.launch.stall import StallWatch

        assert daemon.stall is not None
        self.daemon, self.job, self.log = daemon, job, log
        self.options = daemon.stall
        self.watch = StallWatch(daemon.run_dir, self.options.policy, self.options.ranks)
        self.stop_reason: str | None = None
        self._autopsy: tuple[Path, AutopsySummary] | str | None = None
        self._thread: threading.Thread | None = None

    def _line(self, text: str) -> None:
        """A line in train.log: ``attach`` and the foreground client follow that file."""
        with contextlib.suppress(OSError), self.log.open("a", encoding="utf-8") as fh:
            fh.write(f"[ds-wizard supervisor] {text}\n")

    def turn(self, state: RunState) -> RunState:
        from ds_wizard.core.runs.runstate import RUNNING, STALLED

        event = self.watch.poll()
        stall = self.watch.stalled
        if event == "stalled" and stall is not None:
            self._line(f"{stall.line(time.time())} (no rank moved for "
                       f"{duration(stall.threshold_s)}, {self.options.policy.describe()}); "
                       f"reading the ranks' stacks into {self.daemon.run_dir / 'stalls'}")
            state = replace(state, status=STALLED, stall=stall.to_dict())
            self.daemon._record(state)
            self._autopsy = None
            self._thread = threading.Thread(target=self._collect, args=(stall,), daemon=True,
                                            name="stall-autopsy")
            self._thread.start()
        elif event == "resumed" and state.stall is not None:
            state = replace(state, status=RUNNING, stall=None,
                            stalls=self._episodes(state, "the ranks moved again"))
            self._line(f"the run moves again (stalled for "
                       f"{duration(time.time() - float(state.stalls[-1]['since']))})")
            self.daemon._record(state)
        if stall is not None and self._autopsy is not None and state.stall is not None \
                and state.stall.get("autopsy") is None:
            state = self._autopsy_done(state, stall)
        return state

    def _collect(self, stall: Stall) -> None:
        from ds_wizard.launch.stall import collect_autopsy

        try:
            self._autopsy = collect_autopsy(self.daemon.run_dir, dict(self.watch.beats), stall)
        except OSError as exc:  # the run's disk: the stall itself is still recorded
            self._autopsy = f"the autopsy could not be written: {exc.strerror or exc}"

    def _autopsy_done(self, state: RunState, stall: Stall, act: bool = True) -> RunState:
        from ds_wizard.launch.stall import with_autopsy

        got = self._autopsy
        if isinstance(got, str):
            self._line(got)
            record = replace(stall, autopsy="", odd_one_out=got)
        else:
            assert got is not None
            where, summary = got
            record = with_autopsy(stall, where, summary)
            self._line(f"stall autopsy in {where}: "
                       + (summary.odd_line() or "every rank waits in the same place"))
        state = replace(state, stall=record.to_dict())
        self.daemon._record(state)
        if act and self.options.on_stall == "stop" and self.stop_reason is None:
            where_ = record.autopsy or "(not saved)"
            self.stop_reason = (f"{stall.line(time.time())}; ended by --on-stall stop; "
                                f"{NO_CHECKPOINT}; autopsy in {where_}")
            self._line(f"--on-stall stop: killing the job; {NO_CHECKPOINT}")
            self.job.kill()
        return state

    def _episodes(self, state: RunState, end: str) -> list[dict[str, Any]]:
        from ds_wizard.core.runs.runstate import MAX_EPISODES

        episode = {**(state.stall or {}), "ended": time.time(), "end": end}
        return [*state.stalls, episode][-MAX_EPISODES:]

    def ended(self, state: RunState) -> RunState:
        """The job is over: a stall still open becomes an episode of the record."""
        if self._thread is not None:
            self._thread.join(timeout=60)
            stall = self.watch.stalled
            if stall is not None and self._autopsy is not None and state.stall is not None \
                    and state.stall.get("autopsy") is None:
                state = self._autopsy_done(state, stall, act=False)
        if state.stall is None:
            return state
        return replace(state, stall=None, stalls=self._episodes(state, "the job ended"))
