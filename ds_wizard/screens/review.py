"""Step 4: the complete DeepSpeed JSON, a diff against the target file, and the save."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import ClassVar

from rich.syntax import Syntax
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.markup import escape
from textual.widgets import Footer, Input, Label, Static, TabbedContent, TabPane

from ds_wizard.core.errors import DsWizardError
from ds_wizard.screens.base import StepBar, WizardScreen
from ds_wizard.screens.state import (
    ConfigResult,
    build_config_text,
    check_saved,
    headless_command,
)


class ReviewScreen(WizardScreen):
    step = "review"
    BINDINGS: ClassVar[list[BindingType]] = [
        *WizardScreen.BINDINGS,
        Binding("ctrl+s", "save", "Save"),
        Binding("ctrl+t", "toggle_view", "JSON/diff"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.result: ConfigResult | None = None

    def compose(self) -> ComposeResult:
        yield StepBar(self.step)
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
        yield Footer()

    @property
    def target(self) -> Path:
        path = Path(self.state.output).expanduser()
        return path if path.is_absolute() else self.wizard.cwd / path

    def refresh_from_state(self) -> None:
        state = self.state
        field = self.query_one("#output", Input)
        if field.value != state.output:
            field.value = state.output
        if state.preset is None or state.chosen is None:
            self.result = None
            self.query_one("#review-summary", Static).update("Finish the batch step first.")
            return
        micro, gas = state.chosen
        summary = self.query_one("#review-summary", Static)
        try:
            self.result = build_config_text(state, micro, gas)
        except DsWizardError as exc:
            self.result = None
            summary.update(f"[$error]✘ {escape(exc.one_line())}[/]")
            return
        self.query_one("#json", Static).update(
            Syntax(self.result.text, "json", theme="ansi_dark", background_color="default"))
        offload = f" + {self.result.offload} offload" if self.result.offload else ""
        summary.update(
            f"✔ [b]{micro * gas * state.world_size} = {micro} × {gas} × {state.world_size}[/b]"
            f" · {state.preset.name} · ZeRO-{self.result.zero_stage}{offload}"
        )
        self.query_one("#command", Static).update(
            f"[dim]Same file from a script:[/dim] {headless_command(state, micro, gas)}")
        self._show_diff()

    @on(Input.Changed, "#output")
    def _path_changed(self, event: Input.Changed) -> None:
        self.state.output = event.value.strip()
        if self.result is not None:
            self._show_diff()
            state = self.state
            assert state.chosen is not None
            self.query_one("#command", Static).update(
                f"[dim]Same file from a script:[/dim] {headless_command(state, *state.chosen)}")

    @on(Input.Submitted, "#output")
    def _path_submitted(self, event: Input.Submitted) -> None:
        self.action_save()

    def _show_diff(self) -> None:
        diff = self.query_one("#diff", Static)
        assert self.result is not None
        target = self.target
        if not self.state.output:
            diff.update("Type a path to save to.")
            return
        try:
            old = target.read_text(encoding="utf-8")
        except FileNotFoundError:
            diff.update(f"No file at {self.state.output} yet: saving creates it.")
            return
        except (OSError, UnicodeDecodeError) as exc:
            diff.update(f"Cannot read {self.state.output}: {exc}")
            return
        if old == self.result.text:
            diff.update(f"{self.state.output} already holds exactly this config.")
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
        from ds_wizard.core.fsio import atomic_write_text

        verdict = self.query_one("#verdict", Static)
        if self.result is None:
            self.notify("Nothing to save yet: finish the batch step.", severity="error")
            return
        if not self.state.output:
            self.notify("Type a path to save to.", severity="error")
            return
        target = self.target
        try:
            backup = atomic_write_text(target, self.result.text, backup=True)
            valid, lines = check_saved(target, self.result.world_size)
        except DsWizardError as exc:
            verdict.update(f"[$error]✘ {escape(exc.one_line())}[/]")
            return
        self.state.saved_path = target
        kept = f" (previous file kept as {backup.name})" if backup else ""
        mark = "[$success]✔ check: valid[/]" if valid else "[$error]✘ check: invalid[/]"
        verdict.update(f"Saved {self.state.output}{kept} · {mark} · {' · '.join(lines)}")
        self._show_diff()
        self.notify(f"Saved {self.state.output}")

    def ready(self) -> str | None:
        if self.result is None:
            return "finish the batch step first"
        return None
