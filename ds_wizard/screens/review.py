"""Step 4: the complete DeepSpeed JSON, a diff against the target file, and the save."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import ClassVar

from rich.syntax import Syntax
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.markup import escape
from textual.widgets import Input, Label, Static, TabbedContent, TabPane

from ds_wizard.core.errors import DsWizardError
from ds_wizard.screens.base import WizardScreen
from ds_wizard.screens.state import (
    ConfigResult,
    build_config_text,
    check_saved,
    headless_command,
)


class ReviewScreen(WizardScreen):
    step = "review"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save"),
        Binding("ctrl+t", "toggle_view", "JSON/diff"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.result: ConfigResult | None = None

    def compose_body(self) -> ComposeResult:
        yield Static("", id="review-summary")
        with TabbedContent(id="review-tabs"):
            with TabPane("DeepSpeed JSON", id="tab-json"), VerticalScroll(id="json-scroll"):
                yield Static("", id="json")
            with TabPane("Diff vs file", id="tab-diff"), VerticalScroll(id="diff-scroll"):
                yield Static("", id="diff")
        with Horizontal(id="save-row"):
            yield Label("Save to", id="path-label")
            yield Input(id="output", placeholder="ds_config.json")
        yield Static("", id="verdict")
        yield Static("", id="command")

    @property
    def target(self) -> Path:
        path = Path(self.state.output).expanduser()
        return path if path.is_absolute() else self.wizard.cwd / path

    def refresh_from_state(self) -> None:
        state = self.state
        field = self.query_one("#output", Input)
        if field.value != state.output:
            field.value = state.output
        chosen = state.chosen
        summary = self.query_one("#review-summary", Static)
        if state.preset is None or chosen is None:
            self.result = None
            summary.update("Finish the batch step first.")
            return
        try:
            self.result = build_config_text(state, *chosen)
        except DsWizardError as exc:
            self.result = None
            summary.update(f"[$error]✘ {escape(exc.one_line())}[/]")
            return
        self.query_one("#json", Static).update(
            Syntax(self.result.text, "json", theme="ansi_dark", background_color="default"))
        summary.update(f"✔ [b]{self.result.auto.choice.formula}[/b] · {state.preset.name} · "
                       f"{self.result.strategy}")
        self._show_target()

    @on(Input.Changed, "#output")
    def _path_changed(self, event: Input.Changed) -> None:
        self.state.output = event.value.strip()
        if self.result is not None:
            self._show_target()

    def _show_target(self) -> None:
        """The parts that depend on the output path: the diff and the headless command."""
        assert self.result is not None
        choice = self.result.auto.choice
        command = headless_command(self.state, choice.micro_batch, choice.grad_accum)
        self.query_one("#command", Static).update(
            f"[dim]Same file from a script:[/dim] {escape(command)}")
        self._show_diff()

    @on(Input.Submitted, "#output")
    def _path_submitted(self, event: Input.Submitted) -> None:
        self.action_save()

    def _show_diff(self) -> None:
        diff = self.query_one("#diff", Static)
        assert self.result is not None
        target, shown = self.target, self.state.output
        if not shown:
            diff.update("Type a path to save to.")
            return
        # plain Text: a path or an OS error is never markup
        from ds_wizard.core.checker import MAX_CONFIG_BYTES
        from ds_wizard.core.fsio import read_input
        from ds_wizard.core.text import sanitize

        if not os.path.lexists(target):
            diff.update(Text(f"No file at {shown} yet: saving creates it."))
            return
        try:  # a regular file only, size-capped: a FIFO or /dev/zero here must not hang
            old = read_input(target, limit=MAX_CONFIG_BYTES, what="config file") \
                .decode("utf-8")
        except DsWizardError as exc:
            diff.update(Text(sanitize(exc.one_line())))
            return
        except UnicodeDecodeError as exc:
            diff.update(Text(f"Cannot read {shown}: {exc}"))
            return
        if old == self.result.text:
            diff.update(Text(f"{shown} already holds exactly this config."))
            return
        lines = difflib.unified_diff(old.splitlines(keepends=True),
                                     self.result.text.splitlines(keepends=True),
                                     fromfile=f"{self.state.output} (on disk)",
                                     tofile=f"{self.state.output} (new)")
        diff.update(Syntax("".join(lines), "diff", theme="ansi_dark",
                           background_color="default"))

    def action_toggle_view(self) -> None:
        tabs = self.query_one("#review-tabs", TabbedContent)
        tabs.active = "tab-diff" if tabs.active == "tab-json" else "tab-json"

    def action_save(self) -> None:
        from ds_wizard.core.fsio import write_if_changed

        verdict = self.query_one("#verdict", Static)
        if self.result is None:
            self.notify("Nothing to save yet: finish the batch step.", severity="error")
            return
        if not self.state.output:
            self.notify("Type a path to save to.", severity="error")
            return
        target = self.target
        try:
            # an identical file is left alone, so saving again keeps the real backup
            written, backup = write_if_changed(target, self.result.text, backup=True)
            valid, lines = check_saved(target, self.result.auto.world_size)
        except DsWizardError as exc:
            verdict.update(f"[$error]✘ {escape(exc.one_line())}[/]")
            return
        self.state.saved_path = target
        shown = escape(self.state.output)
        if backup is not None:
            kept = f" (previous file kept as {escape(backup.name)})"
        else:
            kept = "" if written else " (it already held this config)"
        mark = "[$success]✔ check: valid[/]" if valid else "[$error]✘ check: invalid[/]"
        verdict.update(f"Saved {shown}{kept} · {mark} · {escape(' · '.join(lines))}")
        self._show_diff()
        self.notify(f"Saved {shown}")

    def ready(self) -> str | None:
        if self.result is None:
            return "finish the batch step first"
        return None
