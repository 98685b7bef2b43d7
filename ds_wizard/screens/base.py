"""What every wizard step shares: the step bar, Back/Next keys and the footer.

A step gets what it needs from the app through the :class:`WizardContext` passed to its
constructor, and asks the app for a step change with a message (``NextStep``,
``PrevStep``); see ``screens/context.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, OptionList, RadioSet, Static
from textual.worker import Worker, WorkerState

from ds_wizard.messages import NextStep, PrevStep, WorkerFailed

if TYPE_CHECKING:
    from ds_wizard.screens.context import WizardContext
    from ds_wizard.screens.state import WizardState


class StepBar(Static):
    """``1 GPUs › 2 Preset › …`` with the current step highlighted."""

    def __init__(self, step: str, ctx: WizardContext) -> None:
        super().__init__(id="step-bar")
        self.step = step
        self.ctx = ctx

    def on_mount(self) -> None:
        self.show()

    def show(self) -> None:
        """Redraw, with the planning mode when the GPUs are not this machine's."""
        state = self.ctx.state
        if state.planning_elsewhere:
            # in place of the app's name, so that the whole bar still fits 80 columns
            gpus = (f"{state.nodes}×{state.ranks_per_node}" if state.nodes > 1
                    else str(state.ranks_per_node))
            text = Text(style="bold").append(f" ⚑ other machine ({gpus} GPUs) ",
                                             style="reverse")
            text.append("  ")
        else:
            text = Text(" ds-wizard  ", style="bold")
        for i, step in enumerate(self.ctx.steps, 1):
            if i > 1:
                text.append(" › ", style="dim")
            label = f"{i} {step.title}"
            text.append(label, style="reverse bold" if step.name == self.step else "")
        self.update(text)


class WizardScreen(Screen):
    """A step. Subclasses set ``step``, compose their part in ``compose_body`` and implement
    ``refresh_from_state``/``store``/``ready``. Their own ``BINDINGS`` add to these (Textual
    merges bindings down the class hierarchy)."""

    step: ClassVar[str] = ""
    _just_mounted = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "prev_step", "Back", id="wizard.back",
                tooltip="Previous step; your answers are kept"),
        Binding("ctrl+n", "next_step", "Next", id="wizard.next",
                tooltip="Check this step and go to the next one"),
    ]

    def __init__(self, ctx: WizardContext) -> None:
        super().__init__()
        self.ctx = ctx

    def compose(self) -> ComposeResult:
        yield StepBar(self.step, self.ctx)
        yield from self.compose_body()
        yield Static("", id="not-yet")
        yield Footer()

    def show_problem(self, problem: str | None) -> None:
        """Say why the step is not complete, in place; None clears it."""
        line = self.query_one("#not-yet", Static)
        line.update(Text(f"✘ Not yet: {problem}") if problem else "")
        line.display = bool(problem)

    @on(Input.Changed)
    @on(RadioSet.Changed)
    @on(DataTable.RowHighlighted)
    @on(OptionList.OptionSelected)
    def _edited(self) -> None:
        # any change may have fixed it; ^n checks again
        if self.is_mounted:
            self.show_problem(None)

    def compose_body(self) -> ComposeResult:
        """The widgets between the step bar and the footer."""
        yield from ()

    @property
    def state(self) -> WizardState:
        return self.ctx.state

    def on_mount(self) -> None:
        # Textual runs every class's on_mount, the subclass's first: subclasses set up their
        # widgets in their own on_mount and never call this one
        if not self.ctx.cursor_blink:
            for field in self.query(Input):
                field.cursor_blink = False
        self._just_mounted = True
        self.refresh_from_state()

    def on_screen_resume(self) -> None:
        self.query_one(StepBar).show()
        if self._just_mounted:
            # the first resume follows the mount, which has just shown the state
            self._just_mounted = False
            return
        # earlier steps may have changed the shared state while this screen was away
        if self.is_mounted:
            self.refresh_from_state()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # worker messages do not bubble: each screen hands failures on to the app
        if event.state == WorkerState.ERROR:
            self.post_message(WorkerFailed(event.worker))

    def refresh_from_state(self) -> None:
        """Show what the shared state holds."""

    def store(self) -> None:
        """Copy this screen's answers into the shared state (called before leaving)."""

    def ready(self) -> str | None:
        """None when the step is complete, else what is missing (one line)."""
        return None

    def action_next_step(self) -> None:
        self.post_message(NextStep())

    def action_prev_step(self) -> None:
        self.post_message(PrevStep())

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        names = self.ctx.step_names
        if action == "prev_step":
            return self.step != names[0]
        if action == "next_step":
            return self.step != names[-1]
        return True
