"""Step 5: run the job, stream its output, follow metrics.jsonl, stop it cleanly.

The job runs under the launcher's supervisor (its own process group). Reading its output
and its metrics file happens in thread workers; the UI drains what they collected on a
timer, so a chatty job costs one batched write per tick and the log stays bounded.
"""

from __future__ import annotations

import collections
import threading
from pathlib import Path
from time import monotonic  # a module attribute: the snapshot tests stop the clock
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Static
from textual.worker import Worker, WorkerState

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.base.text import sanitize
from ds_wizard.messages import JobExited, JobStarted
from ds_wizard.screens.base import WizardScreen
from ds_wizard.screens.chart import LossChart, points_of
from ds_wizard.screens.dialogs import ConfirmScreen
from ds_wizard.screens.state import where_script
from ds_wizard.screens.widgets import FollowLog, safe_markup

if TYPE_CHECKING:
    from ds_wizard.screens.context import Job, JobFactory, WizardContext
    from ds_wizard.screens.state import WizardState

LOG_MAX_LINES = 5000
TAIL_LINES = 8
DRAIN_INTERVAL = 0.1


class LaunchScreen(WizardScreen):
    step = "launch"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+l", "start", "Start", id="launch.start",
                tooltip="Start training with the saved config"),
        Binding("ctrl+t", "stop", "Stop", id="launch.stop",
                tooltip="Stop the job gracefully (checkpoint first)"),
    ]

    def __init__(self, ctx: WizardContext) -> None:
        super().__init__(ctx)
        self.job: Job | None = None
        self.running = False
        self.stopping = False
        self._pending: collections.deque[str] = collections.deque()
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._metrics: collections.deque[dict[str, Any]] = collections.deque()
        self._losses: list[tuple[int, float]] = []  # (step, loss) of the run followed
        self._started_at: float | None = None
        self._ended_at: float | None = None
        self._notice = ""  # what a first run compiles, found off the UI thread
        self._last: dict[str, Any] = {}
        self._done = threading.Event()
        self._exit_after_stop = False
        self._run_dir = ""

    def compose_body(self) -> ComposeResult:
        yield Static("", id="launch-info")
        with Horizontal(id="launch-status-row"):
            yield Static("", id="launch-status")
            yield LossChart(id="loss-plot")
        yield FollowLog(max_lines=LOG_MAX_LINES, id="log")
        yield Static("", id="launch-result")

    def on_mount(self) -> None:
        self.query_one("#log", FollowLog).border_title = "Output"
        self.set_interval(DRAIN_INTERVAL, self._drain)

    def refresh_from_state(self) -> None:
        if self.running:
            return
        state = self.state
        saved = state.saved_path
        where = (f"config {saved.name}" if saved
                 else "config not saved yet: ^s on the review step")
        name = state.preset.name if state.preset else "?"
        info = self.query_one("#launch-info", Static)
        if state.planning_elsewhere:
            info.update(
                f"[b]Planning for another machine[/b]: {safe_markup(state.machine_label)}. "
                "Nothing is launched here; copy the saved config"
                f"{safe_markup(where_script(state))} "
                "to that machine.\nFor a run on this machine, press ^t on the GPU step "
                "(CPU demo)."
            )
        else:
            what = "CPU demo: " if state.cpu_demo else ""
            unit = "CPU rank(s)" if state.uses_cpu else "GPU(s)"
            info.update(
                f"{what}[b]{name}[/b] on {state.world_size} {unit} · {safe_markup(where)}\n"
                "Press [b]^l[/b] to start training, [b]^t[/b] to stop it."
            )
        self._show_status()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "start":
            # another machine's plan is not started here, not even as CPU ranks
            return not self.running and not self._elsewhere()
        if action == "stop":
            return self.running
        if action == "prev_step" and self.running:
            return False
        return super().check_action(action, parameters)

    # -- starting ----------------------------------------------------------------------
    def action_start(self) -> None:
        if self.running:
            return
        if self._elsewhere():
            self.notify("Planning for another machine: nothing is launched here.",
                        severity="error", markup=False)
            return
        self._reset_view()
        self._begin(self.ctx.job_factory)

    def _elsewhere(self) -> bool:
        """Another single machine's plan: nothing starts here, not even as CPU ranks (a
        multi-node plan starts on its head node, or writes its scripts)."""
        return self.state.planning_elsewhere and not self.state.topology().multi_node

    def _reset_view(self) -> None:
        """A fresh log, chart and status for the next job (started or attached to)."""
        log = self.query_one("#log", FollowLog)
        log.clear()
        log.following = True
        self.query_one("#launch-result", Static).update("")
        self._losses.clear()
        self._metrics.clear()
        self.query_one("#loss-plot", LossChart).set_series({})
        self._ended_at = None
        self._notice = ""
        self._last = {}
        self._tail.clear()
        self._done.clear()
        self.job = None
        self.running = True
        self.stopping = False
        self._started_at = monotonic()
        self.refresh_bindings()

    def _begin(self, factory: JobFactory) -> None:
        state = self.state
        self.running = True
        self.refresh_bindings()
        self.run_worker(lambda: self._run(factory, state), thread=True, group="job",
                        name="job", exit_on_error=False)

    def _run(self, factory: JobFactory, state: WizardState) -> None:
        """Thread worker: start the job, collect its lines until it exits."""
        try:
            job = factory(state)
            notice = getattr(job, "first_run_notice", None)
            if notice:
                self._notice = str(notice)
                self._pending.append(f"⏳ {notice}")
        except DsWizardError as exc:
            self.post_message(JobExited(-1, False, error=exc.one_line()))
            return
        except OSError as exc:
            self.post_message(JobExited(-1, False, error=f"{type(exc).__name__}: {exc}"))
            return
        self.job = job
        if self.stopping:
            # the stop was confirmed while the run was still being prepared
            threading.Thread(target=job.stop, daemon=True, name="job-stop").start()
        self.post_message(JobStarted(job.pid, job.command, str(job.run_dir or "")))
        tailer = None
        if job.run_dir is not None:
            tailer = threading.Thread(target=self._follow_metrics, args=(job.run_dir,),
                                      daemon=True, name="metrics-tail")
            tailer.start()
        for line in job.lines():
            self._pending.append(line)
        code = job.wait()
        self._done.set()
        if tailer is not None:
            tailer.join(timeout=2)
        self.post_message(JobExited(code, self.stopping))

    def _follow_metrics(self, run_dir: Path) -> None:
        """Thread: read complete new records of metrics.jsonl until the job ends."""
        from ds_wizard.core.runs.metrics import tail_metrics

        path = run_dir / "metrics.jsonl"
        offset = 0
        while True:
            finished = self._done.wait(0.25)
            got = tail_metrics(path, offset)
            offset = got.offset
            self._metrics.extend(got.records)
            # a line that is not a record is shown, never dropped in silence
            self._pending.extend(f"warning: {problem}" for problem in got.problems)
            if finished:
                return

    def on_job_started(self, message: JobStarted) -> None:
        self._run_dir = message.run_dir
        where = Path(message.run_dir).name if message.run_dir else ""
        self.query_one("#launch-info", Static).update(
            f"[b]Running[/b] {where} · output below (also in its train.log)\n"
            "Press [b]^t[/b] to stop it (you will be asked first)."
        )

    def _drain(self) -> None:
        if self._pending:
            batch = []
            while self._pending:
                line = self._pending.popleft()
                batch.append(line)
                self._tail.append(line)
            self.query_one("#log", FollowLog).add_lines(batch)
        if self._metrics:
            while self._metrics:
                record = self._metrics.popleft()
                self._last.update(record)
                self._losses += points_of([record])
            name = Path(self._run_dir).name if self._run_dir else "loss"
            self.query_one("#loss-plot", LossChart).set_series({name: self._losses})
        if self.running:
            self._show_status()

    def _show_status(self) -> None:
        last = self._last
        # wall time since ^l on the monotonic clock. The trainer's own elapsed_s starts
        # later (after start-up): shown alone it made the clock jump back when the first
        # metric arrived. Never below it, so the clock only ever moves forward.
        elapsed = None
        if self._started_at is not None:
            elapsed = (self._ended_at or monotonic()) - self._started_at
            trainer = last.get("elapsed", last.get("elapsed_s"))
            if isinstance(trainer, (int, float)):
                elapsed = max(elapsed, trainer)
        tok = last.get("tokens_per_s", last.get("tokens_per_sec"))
        loss = last.get("loss")
        parts = [
            f"step [b]{last.get('step', '—')}[/b]",
            f"loss [b]{loss:.4f}[/b]" if isinstance(loss, (int, float)) else "loss —",
            f"{tok:,.0f} tok/s" if isinstance(tok, (int, float)) else "— tok/s",
            _clock(elapsed) if isinstance(elapsed, (int, float)) else "--:--",
        ]
        self.query_one("#launch-status", Static).update(" · ".join(parts))

    # -- stopping ----------------------------------------------------------------------
    def action_stop(self) -> None:
        if not self.running:
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.stop_job()

        self.app.push_screen(
            ConfirmScreen("Stop training?", "The job gets a graceful stop (it saves a "
                          "checkpoint), then is killed if it does not exit.", yes="Stop"),
            answer,
        )

    def stop_job(self, then_exit: bool = False) -> None:
        self._exit_after_stop = self._exit_after_stop or then_exit
        if not self.running:
            if then_exit:
                self.app.exit()
            return
        if self.stopping:
            return
        self.stopping = True
        self.query_one("#launch-result", Static).update("Stopping… (waiting for a checkpoint)")
        job = self.job
        if job is not None:
            # stop() waits for the process group; keep it off the UI thread
            self.run_worker(job.stop, thread=True, group="job-stop", name="stop",
                            exit_on_error=False)

    def on_job_exited(self, message: JobExited) -> None:
        self._drain()  # the last lines may still be waiting for the timer
        self.running = False
        self._ended_at = monotonic()
        self.refresh_bindings()
        result = self.query_one("#launch-result", Static)
        failed = bool(message.error) or (message.returncode != 0 and not message.stopped)
        result.set_class(failed, "error")
        # job output is plain text: never let "[fake]" or "[INFO]" be read as markup
        if message.error:
            result.update(Text(f"✘ could not start: {sanitize(message.error)}"))
        elif message.stopped:
            # the ranks alone get the stop signal: a clean stop (checkpoint saved) exits 0
            how = ("the ranks saved a checkpoint and exited cleanly"
                   if message.returncode == 0 else f"exit code {message.returncode}")
            result.update(Text(f"■ stopped ({how})"))
        elif getattr(self.job, "prepared", False):
            # a multi-node run that starts on its head node or under Slurm
            result.update(Text(f"📝 scripts written, nothing started here: "
                               f"{getattr(self.job, 'command', '')}"))
        elif message.returncode == 0:
            result.update(Text("✔ finished (exit code 0)"))
        else:
            tail = "\n".join(sanitize(line) for line in list(self._tail)[-5:])
            result.update(Text(f"✘ failed with exit code {message.returncode}\n{tail}"))
        self._show_status()
        if self._run_dir:
            self.query_one("#launch-info", Static).update(
                f"Last run: [b]{Path(self._run_dir).name}[/b] (train.log and metrics.jsonl "
                "are there)\nPress [b]^l[/b] to start again.")
        if self._exit_after_stop:
            self.app.exit()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # the app's handler reports the error (WizardScreen); a failed job worker also
        # means the job is over as far as this screen is concerned
        if event.state == WorkerState.ERROR and event.worker.group == "job" and self.running:
            self.post_message(JobExited(-1, False, error=f"{event.worker.error}"))

    def leave_or_stop(self) -> None:
        """At app exit: a run under its own supervisor is left running (it is listed by
        ``ds-wizard runs``); a job owned by this process is stopped, so nothing it owns
        outlives the UI."""
        job = self.job
        if not self.running or job is None:
            return
        leave = getattr(job, "leave", None)
        if getattr(job, "outlives_client", False) and leave is not None:
            leave()
        else:
            job.stop()

    def on_unmount(self) -> None:
        # The app is closing with the job still running: stop following it (its output
        # thread would otherwise keep the event loop from closing).
        self.leave_or_stop()

    def following_name(self) -> str:
        """The run this step follows (its directory's name), or ''."""
        run_dir = getattr(self.job, "run_dir", None) or self._run_dir
        return Path(run_dir).name if run_dir else ""

    def attach(self, job: Job) -> None:
        """Follow a run that is already going (``ds-wizard attach RUN``, the Runs screen)."""
        if self.running:
            return
        if self.is_mounted:
            self._reset_view()
        self._begin(lambda state: job)


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else \
        f"{s // 60:02d}:{s % 60:02d}"
