"""The wizard app: GPUs → preset → batch → review and save → launch.

``make_app`` is the one way to build it, shared by ``ds-wizard`` and the tests, so a test
injects fake GPUs or a fake job through the same door the CLI uses. It puts everything the
screens may use in one ``WizardContext`` (``screens/context.py``) that each screen gets in
its constructor; the screens report back with the messages of ``ds_wizard.messages``,
handled here. This module imports the screens; they never import it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from ds_wizard.core.base.text import sanitize
from ds_wizard.core.plan.gpus import GpuProbe, detect_gpus
from ds_wizard.messages import FollowRun, NextStep, PrevStep, WorkerFailed
from ds_wizard.screens.base import WizardScreen
from ds_wizard.screens.batch import BatchScreen
from ds_wizard.screens.context import (
    DoctorProbe,
    Job,
    JobFactory,
    RunsApi,
    Step,
    WizardContext,
)
from ds_wizard.screens.dialogs import QuitScreen
from ds_wizard.screens.gpus import GpuScreen
from ds_wizard.screens.jobs import LauncherRuns, launcher_doctor, launcher_job
from ds_wizard.screens.launch import LaunchScreen
from ds_wizard.screens.preset import PresetScreen
from ds_wizard.screens.review import ReviewScreen
from ds_wizard.screens.runs import RunsScreen
from ds_wizard.screens.state import WizardState

STEPS: tuple[tuple[str, str, Callable[[WizardContext], WizardScreen]], ...] = (
    ("gpus", "GPUs", GpuScreen),
    ("preset", "Preset", PresetScreen),
    ("batch", "Batch", BatchScreen),
    ("review", "Review", ReviewScreen),
    ("launch", "Launch", LaunchScreen),
)


class WizardApp(App[None]):
    CSS_PATH = "screens/wizard.tcss"
    TITLE = "ds-wizard"
    ENABLE_COMMAND_PALETTE = True
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit", priority=True, id="app.quit",
                tooltip="Quit (a running job is left running or stopped, as you choose)"),
        # priority: a focused Input would take ^e (end of line)
        Binding("ctrl+e", "open_runs", "Runs", id="runs", priority=True,
                tooltip="The runs on this machine: attach, stop, resume, compare losses"),
    ]

    def notify(self, message: str, *args: Any, **kwargs: Any) -> None:
        """Every notification of every screen passes here: its text (often an error that
        quotes a file name, a key or a log line) is sanitized before it is shown."""
        super().notify(sanitize(message), *args, **kwargs)

    def __init__(self, ctx: WizardContext, *, attach: Path | None = None) -> None:
        super().__init__()
        self.ctx = ctx
        self.state = ctx.state
        self.attach_to = attach

    def on_mount(self) -> None:
        for name, _, factory in STEPS:
            self.install_screen(factory(self.ctx), name)
        if self.attach_to is None:
            self.push_screen(self.ctx.step_names[0])
            return
        from ds_wizard.screens.jobs import RunClientJob

        self.push_screen("launch")
        self.launch_screen.attach(RunClientJob.attach(self.attach_to))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.worker_failed(event.worker)

    # -- what the screens ask for (ds_wizard.messages) ----------------------------------
    def on_next_step(self, message: NextStep) -> None:
        self.action_next_step()

    def on_prev_step(self, message: PrevStep) -> None:
        self.action_prev_step()

    def on_follow_run(self, message: FollowRun) -> None:
        self.follow(message.job)

    def on_worker_failed(self, message: WorkerFailed) -> None:
        self.worker_failed(message.worker)

    def worker_failed(self, worker: Worker) -> None:
        """The one handler for an unexpected error in a worker: show it, keep running.

        Every worker is started with ``exit_on_error=False``, so a bug in one step's
        background work costs that result, not the session (or a running job)."""
        error = worker.error
        what = f"{type(error).__name__}: {error}" if error is not None else "unknown error"
        self.log.error(f"worker {worker.name!r} failed", error)
        self.notify(what, title=f"Background task failed ({worker.name or worker.group})",
                    severity="error", markup=False, timeout=15)

    @property
    def step(self) -> str:
        screen = self.screen
        return screen.step if isinstance(screen, WizardScreen) else ""

    def goto(self, step: str) -> None:
        current = self.screen
        if isinstance(current, WizardScreen) and current.step == step:
            return
        if isinstance(current, WizardScreen):
            current.store()
        self.switch_screen(step)

    def action_next_step(self) -> None:
        current = self.screen
        if not isinstance(current, WizardScreen):
            return
        problem = current.ready()
        if problem:
            current.show_problem(problem)
            return
        idx = self.ctx.step_names.index(current.step)
        if idx + 1 < len(self.ctx.step_names):
            self.goto(self.ctx.step_names[idx + 1])

    def action_prev_step(self) -> None:
        current = self.screen
        if not isinstance(current, WizardScreen):
            return
        if self.job_running and current.step == "launch":
            self.notify("Stop the job first (^t), or quit.", severity="warning")
            return
        idx = self.ctx.step_names.index(current.step)
        if idx > 0:
            self.goto(self.ctx.step_names[idx - 1])

    def action_goto(self, step: str) -> None:
        """Jump straight to a step, checking each step before it the way Next does."""
        target = self.ctx.step_names.index(step)
        current = self.screen
        if isinstance(current, WizardScreen):
            here = self.ctx.step_names.index(current.step)
            if target > here:
                current.store()
                for name in self.ctx.step_names[here:target]:
                    screen = self.get_screen(name, WizardScreen)
                    if not screen.is_mounted:
                        # never visited: its defaults have not been shown yet
                        self.goto(name)
                        return
                    problem = screen.ready()
                    if problem:
                        self.notify(problem, title=f"{self.ctx.title(name)} first",
                                    severity="error", markup=False)
                        self.goto(name)
                        return
        self.goto(step)

    @property
    def launch_screen(self) -> LaunchScreen:
        return self.get_screen("launch", LaunchScreen)

    @property
    def job_running(self) -> bool:
        return self.is_screen_installed("launch") and self.launch_screen.running

    async def action_quit(self) -> None:
        if not self.job_running:
            self.exit()
            return

        def answer(choice: str | None) -> None:
            if choice == QuitScreen.STOP:
                self.launch_screen.stop_job(then_exit=True)
            elif choice == QuitScreen.LEAVE:
                self.exit()  # leaving the app leaves the run to its supervisor

        self.push_screen(QuitScreen(self.launch_screen.following_name()), answer)

    def action_open_runs(self) -> None:
        if not isinstance(self.screen, RunsScreen):
            self.push_screen(RunsScreen(self.ctx))

    def follow(self, job: Job) -> None:
        """Show ``job`` (attached to or resumed from the Runs screen) on the launch step."""
        if self.job_running:
            self.notify("The launch step already follows a run: stop it or quit first.",
                        severity="warning")
            return
        while isinstance(self.screen, RunsScreen):
            self.pop_screen()
        self.goto("launch")
        self.launch_screen.attach(job)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for name, title, _ in STEPS:
            yield SystemCommand(f"Go to {title}", f"Step {self.ctx.step_names.index(name) + 1}",
                                lambda n=name: self.action_goto(n))
        yield SystemCommand("Next step", "Check this step and move on", self.action_next_step)
        yield SystemCommand("Back", "Previous step; your answers are kept", self.action_prev_step)
        yield SystemCommand("Save config", "Write the DeepSpeed JSON (review step)",
                            self._palette_save)
        yield SystemCommand("Launch training", "Start the job (launch step)",
                            self._palette_launch)
        if self.job_running:
            yield SystemCommand("Stop training", "Stop the running job gracefully",
                                self.launch_screen.action_stop)
        yield SystemCommand("Runs", "Every run: live status, attach, stop, resume, loss curves",
                            self.action_open_runs)
        yield SystemCommand("CPU demo run", "tiny_mamba on 2 CPU ranks, no GPU needed",
                            self._palette_cpu_demo)

    def _goto_then(self, step: str, action: Callable[[], object]) -> None:
        """Jump to ``step`` and run ``action`` there, unless an earlier step needs work
        first (the jump then stops at that step, and the action would act on an unseen
        screen)."""
        self.action_goto(step)
        self.call_after_refresh(lambda: action() if self.step == step else None)

    def _palette_save(self) -> None:
        self._goto_then("review", self.get_screen("review", ReviewScreen).action_save)

    def _palette_launch(self) -> None:
        self._goto_then("launch", self.launch_screen.action_start)

    def _palette_cpu_demo(self) -> None:
        self._goto_then("gpus", self.get_screen("gpus", GpuScreen).action_cpu_demo)


def make_app(
    gpu_probe: GpuProbe | None = None,
    *,
    job_factory: JobFactory | None = None,
    output: str | Path = "ds_config.json",
    cwd: str | Path | None = None,
    cursor_blink: bool = True,
    steps: int | None = None,
    attach: Path | None = None,
    runs_api: RunsApi | None = None,
    doctor: DoctorProbe | None = None,
) -> WizardApp:
    """Build the wizard. Tests pass fake GPUs, a fake job, fake runs and
    ``cursor_blink=False``; each service left out is the real one."""
    base = Path(cwd) if cwd is not None else Path.cwd()
    state = WizardState(output=str(output), runs_dir=base / "runs", train_steps=steps)
    ctx = WizardContext(
        state=state,
        steps=tuple(Step(name, title) for name, title, _ in STEPS),
        gpu_probe=gpu_probe or detect_gpus,
        job_factory=job_factory or launcher_job,
        runs=runs_api if runs_api is not None else LauncherRuns(),
        doctor=doctor or launcher_doctor,
        cwd=base,
        cursor_blink=cursor_blink,
    )
    return WizardApp(ctx, attach=attach)


def exit_on_signals(app: App[None]) -> dict[int, Any]:
    """SIGHUP and SIGTERM end the app the way ^q does (returns the previous handlers).

    Python's default SIGTERM ends the process without unwinding, which would leave the
    terminal in raw mode. The handler only asks the app to exit, so it works whatever the
    UI is showing: nothing slow runs on the UI thread to delay it. A run the app shows is
    owned by its own supervisor and goes on.
    """
    import signal

    return {s: signal.signal(s, lambda signum, frame: app.exit())
            for s in (signal.SIGHUP, signal.SIGTERM)}


def run(attach: Path | None = None) -> None:
    """Entry point for a bare ``ds-wizard`` (and ``ds-wizard attach RUN``).

    The job runs under its own supervisor, in its own session: on SIGHUP (a dropped SSH
    connection) or SIGTERM the app exits and the run goes on, listed by ``ds-wizard runs``.
    """
    import signal
    import sys

    from ds_wizard.core.base.errors import ExitCode

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        # piped or scripted: a full-screen UI would hang or garble the output
        print("ds-wizard: the wizard needs a terminal. Headless: ds-wizard --auto "
              "--num-gpus N --preset NAME (see ds-wizard --help); "
              "`ds-wizard attach RUN --plain` follows a run as text.", file=sys.stderr)
        raise SystemExit(ExitCode.USAGE)
    app = make_app(attach=attach)
    previous = exit_on_signals(app)
    try:
        app.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if app.is_screen_installed("launch"):
            app.launch_screen.leave_or_stop()


def run_attached(run_dir: Path) -> None:
    """``ds-wizard attach RUN``: the launch screen, following a run that is going."""
    run(attach=run_dir)
