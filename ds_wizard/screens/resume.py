"""Where to resume a run: as it was launched, or on this machine's number of ranks with
the same global batch split anew (issue 21). Shown by the Runs screen before anything
starts, when the two numbers differ."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

if TYPE_CHECKING:
    from ds_wizard.core.runs.reshape import ResumeOffer


class ResumeWhereScreen(ModalScreen[int | None]):
    """Dismisses with the number of ranks to resume on (the run's own for "as launched"),
    or None when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "answer('same')", "As launched"),
        Binding("m", "answer('here')", "On this machine"),
        Binding("escape", "answer(None)", "Cancel"),
    ]

    def __init__(self, name: str, offer: ResumeOffer) -> None:
        super().__init__(classes="dialog-screen")
        self.run_name = name
        self.offer = offer

    def compose(self) -> ComposeResult:
        o = self.offer
        ranks = f"{o.run_world} rank{'s' if o.run_world != 1 else ''}"
        with Vertical(classes="dialog"):
            yield Static(f"Resume {self.run_name}", classes="dialog-title")
            yield Static(f"It was trained on {ranks}. Resume {o.label}: {o.detail}. "
                         "The checkpoint is converted with DeepSpeed's ds_to_universal "
                         "first; the data and the LR schedule go on where they stopped.",
                         classes="dialog-question", id="resume-detail")
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"As launched, {ranks} (s)", id="same", variant="primary")
                yield Button(f"{o.label[0].upper()}{o.label[1:]} (m)", id="here",
                             variant="warning", disabled=o.split is None)

    def on_mount(self) -> None:
        self.query_one("#same", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_answer(event.button.id)

    def action_answer(self, which: str | None) -> None:
        if which == "here" and self.offer.split is None:
            return  # nothing to split the global batch over: only "as launched" is offered
        self.dismiss(None if which is None else
                     self.offer.here if which == "here" else self.offer.run_world)
