"""Small modal questions: yes/no, and one line of text."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from ds_wizard.screens.widgets import OrderedInput


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, title: str, question: str, yes: str = "Yes", no: str = "No") -> None:
        super().__init__(classes="dialog-screen")
        self.title_text = title
        self.question = question
        self.yes = yes
        self.no = no

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.title_text, classes="dialog-title")
            yield Static(self.question, classes="dialog-question")
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.yes} (y)", id="yes", variant="error")
                yield Button(f"{self.no} (n)", id="no", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class QuitScreen(ModalScreen[str | None]):
    """Quitting while a run is followed: leave it running (the default) or stop it."""

    LEAVE, STOP = "leave", "stop"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("l", "answer('leave')", "Leave running"),
        Binding("s", "answer('stop')", "Stop it"),
        Binding("escape", "answer(None)", "Cancel"),
    ]

    def __init__(self, run: str = "") -> None:
        super().__init__(classes="dialog-screen")
        self.run = run

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static("A training run is going.", classes="dialog-title")
            yield Static(f"Quit and leave {self.run or 'it'} running (it goes on under its "
                         "own supervisor: ^e Runs or `ds-wizard attach` comes back to it), "
                         "or stop it first (checkpoint, then quit)? Esc: stay.",
                         classes="dialog-question")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Leave running (l)", id="leave", variant="primary")
                yield Button("Stop it (s)", id="stop", variant="error")

    def on_mount(self) -> None:
        self.query_one("#leave", Button).focus()  # the default: Enter leaves it running

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id)

    def action_answer(self, value: str | None) -> None:
        self.dismiss(value)


class AskTextScreen(ModalScreen[str | None]):
    """One line of input; Enter accepts, Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, placeholder: str = "", value: str = "",
                 cursor_blink: bool = True) -> None:
        super().__init__(classes="dialog-screen")
        self.title_text = title
        self.placeholder = placeholder
        self.value = value
        self.blink = cursor_blink

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.title_text, classes="dialog-title")
            field = OrderedInput(self.value, placeholder=self.placeholder, id="answer")
            field.cursor_blink = self.blink
            yield field
            yield Label("Enter to accept, Esc to cancel", classes="dim")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)
