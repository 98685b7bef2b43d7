"""The Runs screen: every run with its live status; attach, stop, resume; loss curves.

Reachable from any step (``^e``, or "Runs" in the command palette). The list is read
through the context's runs door (``ctx.runs``; the real one is
``screens.jobs.LauncherRuns``: ``core.runs.runstate`` checks each status against the live
processes) in a thread, once a second. Every call to the door runs off the UI thread
through ``_in_thread``, which shows a ``DsWizardError`` as its one line; a run to follow
goes to the app as a ``FollowRun`` message. Space marks runs whose loss curves the chart
overlays; with none marked it shows the run under the cursor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual.worker import Worker, WorkerState

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.base.text import sanitize
from ds_wizard.messages import FollowRun, WorkerFailed
from ds_wizard.screens.chart import LossChart, points_of
from ds_wizard.screens.dialogs import ConfirmScreen

if TYPE_CHECKING:
    from ds_wizard.core.runs.runstate import RunSummary
    from ds_wizard.screens.context import WizardContext

REFRESH_S = 1.0
COLUMNS = ("", "run", "preset", "status", "step", "loss", "tok/s", "started")
T = TypeVar("T")
STATUS_STYLE = {"running": "bold green", "finished": "cyan", "failed": "bold red",
                "stopped": "yellow", "supervisor lost": "bold magenta",
                "stalled": "bold yellow"}


@dataclass
class _Curve:
    offset: int = 0
    points: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class _Read:
    """One refresh's reading: the runs, and each followed curve's new points and offset."""

    summaries: list[RunSummary]
    new: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)


def _short(path: Path) -> str:
    """A path relative to the working directory when it is under it (shorter to read)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


class RunsScreen(Screen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Back", id="runs.back",
                tooltip="Back to the step you came from"),
        Binding("space", "mark", "Chart on/off", id="runs.mark",
                tooltip="Mark this run: the chart overlays the marked runs' losses"),
        Binding("a", "attach", "Attach", id="runs.attach",
                tooltip="Follow this running run on the launch step"),
        Binding("s", "stop", "Stop", id="runs.stop",
                tooltip="Stop this run gracefully (checkpoint first; asks first)"),
        Binding("r", "resume", "Resume", id="runs.resume",
                tooltip="Resume this stopped run from its last checkpoint and follow it"),
    ]

    def __init__(self, ctx: WizardContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.summaries: list[RunSummary] = []
        self.marked: set[str] = set()
        self._curves: dict[str, _Curve] = {}

    def compose(self) -> ComposeResult:
        yield Static("", id="runs-title")
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield LossChart(id="runs-chart", empty="no loss logged yet")
        yield Static("", id="runs-detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#runs-table", DataTable)
        table.add_columns(*COLUMNS)
        table.focus()
        self.query_one("#runs-title", Static).update(
            Text.assemble(("Runs", "bold"), f" in {_short(Path(self.ctx.state.runs_dir))} · ",
                          ("a", "bold"), " attach · ", ("s", "bold"), " stop · ",
                          ("r", "bold"), " resume · ", ("space", "bold"),
                          " chart · ", ("esc", "bold"), " back"))
        self.refresh_runs()
        self.set_interval(REFRESH_S, self.refresh_runs)

    # -- reading ----------------------------------------------------------------------
    def _in_thread(self, call: Callable[[], T], then: Callable[[T], object], *,
                   group: str, exclusive: bool = False) -> None:
        """Run ``call`` (a runs-door call, which may wait on processes and files) in a
        thread worker, then ``then(result)`` on the UI thread; a ``DsWizardError`` is shown
        as its one line instead. Anything else is a bug: the app's handler shows it."""

        def work() -> None:
            try:
                result = call()
            except DsWizardError as exc:
                self.app.call_from_thread(self.notify, exc.one_line(), severity="error",
                                          markup=False)
                return
            self.app.call_from_thread(then, result)

        self.run_worker(work, thread=True, exclusive=exclusive, group=group, name=group,
                        exit_on_error=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # worker messages do not bubble: hand failures on to the app
        if event.state == WorkerState.ERROR:
            self.post_message(WorkerFailed(event.worker))

    def refresh_runs(self) -> None:
        runs_dir = Path(self.ctx.state.runs_dir)
        api = self.ctx.runs
        curves = self._curves
        wanted = set(self.marked) | ({self.current.name} if self.current else set())

        def read() -> _Read:
            from ds_wizard.core.runs.metrics import read_new_metrics
            from ds_wizard.core.runs.rundir import METRICS

            got = _Read(api.summaries(runs_dir))
            for s in got.summaries:
                if s.name not in wanted and s.name not in curves:
                    continue
                curve = curves.get(s.name, _Curve())
                records, got.offsets[s.name] = read_new_metrics(s.run_dir / METRICS,
                                                                curve.offset)
                got.new[s.name] = points_of(records)
            return got

        self._in_thread(read, self._show, group="runs-refresh", exclusive=True)

    def _show(self, got: _Read) -> None:
        summaries, new, offsets = got.summaries, got.new, got.offsets
        for name, pts in new.items():
            curve = self._curves.setdefault(name, _Curve())
            curve.points += pts
            curve.offset = offsets[name]
        self.summaries = summaries
        table = self.query_one("#runs-table", DataTable)
        order = [s.name for s in reversed(summaries)]  # newest first
        shown = [row.key.value for row in table.ordered_rows]
        if shown == order:
            # the same runs: update the cells in place (no flicker, the cursor stays)
            for s in summaries:
                for column, cell in zip(table.ordered_columns, self._cells(s), strict=True):
                    table.update_cell(s.name, column.key, cell)
        else:
            keep = self.current.name if self.current else None
            table.clear()
            for s in reversed(summaries):
                table.add_row(*self._cells(s), key=s.name)
            if keep in order:
                table.move_cursor(row=table.get_row_index(keep), animate=False)
        self._chart()
        self._detail()

    def _cells(self, s: RunSummary) -> list[Any]:
        status = s.status.value + (" (stopping)" if s.stopping else "")
        total = "?" if s.total_steps is None else s.total_steps
        return ["●" if s.name in self.marked else " ", sanitize(s.name), sanitize(s.preset),
                Text(status, style=STATUS_STYLE.get(s.status.value, "")),
                f"{'—' if s.step is None else s.step}/{total}", _fmt(s.loss, ".4f"),
                _fmt(s.tokens_per_s, ",.0f"), s.started.replace("T", " ")[5:16]]

    @property
    def current(self) -> RunSummary | None:
        table = self.query_one("#runs-table", DataTable)
        if not self.summaries or table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((s for s in self.summaries if s.name == key), None)

    def _chart(self) -> None:
        names = sorted(self.marked) or ([self.current.name] if self.current else [])
        self.query_one("#runs-chart", LossChart).set_series(
            {n: self._curves[n].points for n in names if n in self._curves})

    def _detail(self) -> None:
        s = self.current
        text = "No runs yet: start one on the launch step." if s is None else (
            _short(s.run_dir) + (f" · {s.stop_reason}" if s.stop_reason else "")
            + (f" · checkpoint step {s.checkpoint_step}" if s.checkpoint_step else ""))
        if s is not None and s.stall is not None:
            # the supervisor's verdict (state.json): where it hangs, and the autopsy's files
            autopsy = (s.stall_detail or {}).get("autopsy")
            text += f"\n⚠ {s.stall}" + (f"\n  stacks: {_short(Path(autopsy))}"
                                         if autopsy else "")
        self.query_one("#runs-detail", Static).update(Text(sanitize(text)))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        current = self.current
        if not self.marked and current is not None and current.name not in self._curves:
            self.refresh_runs()  # the chart follows the cursor: read its curve
        self._chart()
        self._detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_attach()

    # -- actions ----------------------------------------------------------------------
    def action_close(self) -> None:
        self.app.pop_screen()

    def action_mark(self) -> None:
        s = self.current
        if s is None:
            return
        self.marked ^= {s.name}
        table = self.query_one("#runs-table", DataTable)
        table.update_cell(s.name, table.ordered_columns[0].key,
                          "●" if s.name in self.marked else " ")
        self.refresh_runs()
        self._chart()

    def action_attach(self) -> None:
        s = self.current
        if s is None:
            return
        if not s.alive:
            hint = " (r resumes it)" if s.resumable else ""
            self.notify(f"{s.name} is not running ({s.status.value}){hint}",
                        severity="warning", markup=False)
            return
        try:
            job = self.ctx.runs.attach(s.run_dir)
        except DsWizardError as exc:
            self.notify(exc.one_line(), severity="error", markup=False)
            return
        self.post_message(FollowRun(job))

    def action_stop(self) -> None:
        s = self.current
        if s is None:
            return
        if not s.alive:
            self.notify(f"{s.name} is not running ({s.status.value})", severity="warning",
                        markup=False)
            return
        api, run_dir, name = self.ctx.runs, s.run_dir, s.name

        def stopped(message: str) -> None:
            self.notify(f"{name}: {message}", markup=False)
            self.refresh_runs()

        def answer(yes: bool | None) -> None:
            if yes:
                self.notify(f"stopping {name} (checkpoint first)…", markup=False)
                self._in_thread(lambda: api.stop(run_dir), stopped, group="runs-stop")

        self.app.push_screen(ConfirmScreen(
            f"Stop {name}?", "The ranks save a checkpoint, then the run ends. "
            "It can be resumed later (r).", yes="Stop"), answer)

    def action_resume(self) -> None:
        s = self.current
        if s is None:
            return
        if not s.resumable:
            why = ("it is still running" if s.alive else "it finished" if
                   s.status.value == "finished" else "it has no complete checkpoint")
            self.notify(f"{s.name} cannot be resumed: {why}", severity="warning",
                        markup=False)
            return
        api, run_dir = self.ctx.runs, s.run_dir
        offer_of = getattr(api, "resume_offer", None)
        try:
            offer = offer_of(run_dir) if offer_of is not None else None
        except DsWizardError:
            offer = None  # the plain resume below says what is wrong with the run
        if offer is not None:
            # this machine has another number of ranks: ask, showing the new split first
            from ds_wizard.screens.resume import ResumeWhereScreen

            def chosen(ranks: int | None) -> None:
                if ranks is not None:
                    self._resume(s, None if ranks == offer.run_world else ranks)

            self.app.push_screen(ResumeWhereScreen(s.name, offer), chosen)
            return
        self._resume(s, None)

    def _resume(self, s: RunSummary, num_gpus: int | None) -> None:
        api, run_dir = self.ctx.runs, s.run_dir
        self.notify(f"resuming {s.name}…", markup=False)
        self._in_thread(lambda: api.resume(run_dir) if num_gpus is None
                        else api.resume(run_dir, num_gpus=num_gpus),  # type: ignore[call-arg]
                        lambda job: self.post_message(FollowRun(job)), group="runs-resume")
