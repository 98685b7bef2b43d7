"""Step 4: the complete DeepSpeed JSON, a diff against the target file, and the save."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from rich.syntax import Syntax
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Input, Label, Select, Static, TabbedContent, TabPane
from textual.worker import get_current_worker

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.messages import NextStep
from ds_wizard.screens.base import WizardScreen
from ds_wizard.screens.dialogs import ConfirmScreen
from ds_wizard.screens.state import (
    ConfigResult,
    build_config_text,
    check_saved,
    headless_command,
    launch_script_text,
    script_path,
)
from ds_wizard.screens.widgets import OrderedInput, safe_markup

if TYPE_CHECKING:
    from ds_wizard.screens.context import WizardContext

# the trackers DeepSpeed's monitor feeds (issue 22); a launch puts their files in the run dir
TRACKER_CHOICES = [("trackers: preset's", "preset"), ("no tracker", "none"),
                   ("TensorBoard", "tensorboard"), ("TensorBoard + CSV", "tensorboard,csv"),
                   ("CSV files", "csv"), ("W&B (offline)", "wandb")]


class ReviewScreen(WizardScreen):
    step = "review"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save", id="review.save",
                tooltip="Write the DeepSpeed JSON (the previous file is kept as .bak)"),
        Binding("ctrl+t", "toggle_view", "JSON/diff", id="review.toggle_view",
                tooltip="Show the JSON, or its diff against the file on disk"),
    ]

    def __init__(self, ctx: WizardContext) -> None:
        super().__init__(ctx)
        self.result: ConfigResult | None = None
        self._saved_text: str | None = None

    def compose_body(self) -> ComposeResult:
        yield Static("", id="review-summary")
        with TabbedContent(id="review-tabs"):
            with TabPane("DeepSpeed JSON", id="tab-json"), VerticalScroll(id="json-scroll"):
                yield Static("", id="json")
            with TabPane("Diff vs file", id="tab-diff"), VerticalScroll(id="diff-scroll"):
                yield Static("", id="diff")
        with Horizontal(id="save-row"):
            yield Label("Save to", id="path-label")
            yield OrderedInput(id="output", placeholder="ds_config.json")
            yield Select(TRACKER_CHOICES, value="preset", allow_blank=False, id="trackers")
        yield Static("", id="verdict")
        yield Static("", id="command")

    @property
    def target(self) -> Path:
        path = Path(self.state.output).expanduser()
        return path if path.is_absolute() else self.ctx.cwd / path

    def refresh_from_state(self) -> None:
        state = self.state
        field = self.query_one("#output", Input)
        if field.value != state.output:
            with self.prevent(Input.Changed):
                field.value = state.output
        chosen = state.chosen
        summary = self.query_one("#review-summary", Static)
        self.result = None
        if state.preset is None or chosen is None:
            summary.update("Finish the batch step first.")
            return
        summary.update("Working out the config…")
        self._build(chosen)

    @work(thread=True, exclusive=True, group="review", name="review config",
          exit_on_error=False)
    def _build(self, chosen: tuple[int, int]) -> None:
        """The config and its memory fit, off the UI thread."""
        try:
            result, error = build_config_text(self.state, *chosen), None
        except DsWizardError as exc:
            result, error = None, exc.one_line()
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show_result, chosen, result, error)

    def _show_result(self, chosen: tuple[int, int], result: ConfigResult | None,
                     error: str | None) -> None:
        state = self.state
        if chosen != state.chosen or state.preset is None:
            return  # the batch changed meanwhile; its own build follows
        summary = self.query_one("#review-summary", Static)
        self.result = result
        if result is None:
            summary.update(f"[$error]✘ {safe_markup(error or '')}[/]")
            return
        self.query_one("#json", Static).update(
            Syntax(result.text, "json", theme="ansi_dark", background_color="default"))
        summary.update(f"✔ [b]{result.auto.choice.formula}[/b] · {state.preset.name} · "
                       f"{result.strategy}")
        self._show_target()

    def _result_now(self) -> ConfigResult | None:
        """The result, worked out here if ^n or ^s came before the worker's answer."""
        chosen = self.state.chosen
        if self.result is None and chosen is not None and self.state.preset is not None:
            try:
                self._show_result(chosen, build_config_text(self.state, *chosen), None)
            except DsWizardError as exc:
                self._show_result(chosen, None, exc.one_line())
        return self.result

    @on(Select.Changed, "#trackers")
    def _trackers_changed(self, event: Select.Changed) -> None:
        from ds_wizard.core.config.monitor import parse_trackers

        value = str(event.value)
        chosen = None if value == "preset" else parse_trackers(value)
        if chosen != self.state.trackers:
            self.state.trackers = chosen
            self.refresh_from_state()

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
            f"[dim]Same file from a script:[/dim] {safe_markup(command)}")
        self._show_diff()

    @on(Input.Submitted, "#output")
    def _path_submitted(self, event: Input.Submitted) -> None:
        self.action_save()

    def _show_diff(self) -> None:
        diff = self.query_one("#diff", Static)
        assert self.result is not None
        if not self.state.output:
            diff.update("Type a path to save to.")
            return
        self._diff(self.target, self.state.output, self.result.text)

    @work(thread=True, exclusive=True, group="review-diff", name="diff", exit_on_error=False)
    def _diff(self, target: Path, shown: str, new: str) -> None:
        """Read the file on disk and diff it, off the UI thread."""
        # plain Text: a path or an OS error is never markup
        from ds_wizard.core.base.fsio import read_input
        from ds_wizard.core.base.text import sanitize
        from ds_wizard.core.check.checker import MAX_CONFIG_BYTES

        content: Text | Syntax
        if not os.path.lexists(target):
            content = Text(f"No file at {shown} yet: saving creates it.")
        else:
            try:  # a regular file only, size-capped: a FIFO or /dev/zero here must not hang
                old = read_input(target, limit=MAX_CONFIG_BYTES, what="config file") \
                    .decode("utf-8")
            except DsWizardError as exc:
                content = Text(sanitize(exc.one_line()))
            except UnicodeDecodeError as exc:
                content = Text(f"Cannot read {shown}: {exc}")
            else:
                if old == new:
                    content = Text(f"{shown} already holds exactly this config.")
                else:
                    lines = difflib.unified_diff(old.splitlines(keepends=True),
                                                 new.splitlines(keepends=True),
                                                 fromfile=f"{shown} (on disk)",
                                                 tofile=f"{shown} (new)")
                    content = Syntax("".join(lines), "diff", theme="ansi_dark",
                                     background_color="default")
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self.query_one("#diff", Static).update, content)

    def action_toggle_view(self) -> None:
        tabs = self.query_one("#review-tabs", TabbedContent)
        tabs.active = "tab-diff" if tabs.active == "tab-json" else "tab-json"

    @property
    def saved(self) -> bool:
        """The file at the target holds exactly the config shown (saved this session)."""
        return (self.result is not None and self.state.saved_path == self.target
                and self._saved_text == self.result.text)

    def action_next_step(self) -> None:
        if self._result_now() is None or self.saved:
            self.post_message(NextStep())
            return

        def answer(save: bool | None) -> None:
            if save and self.action_save():
                self.post_message(NextStep())

        self.app.push_screen(
            ConfirmScreen("The config is not saved yet.",
                          f"The launch step runs the saved file. Save {self.state.output} "
                          "and go on?", yes="Save and go on", no="Stay"),
            answer,
        )

    def action_save(self) -> bool:
        from ds_wizard.core.base.fsio import write_if_changed

        verdict = self.query_one("#verdict", Static)
        if self._result_now() is None:
            self.notify("Nothing to save yet: finish the batch step.", severity="error")
            return False
        if not self.state.output:
            self.notify("Type a path to save to.", severity="error")
            return False
        target = self.target
        try:
            # an identical file is left alone, so saving again keeps the real backup
            written, backup = write_if_changed(target, self.result.text, backup=True)
            valid, lines = check_saved(target, self.result.auto.world_size)
            self.state.saved_path = target
            script = script_path(self.state)
            if script is not None:
                write_if_changed(script, launch_script_text(self.state))
                script.chmod(0o755)
        except (DsWizardError, OSError) as exc:
            message = exc.one_line() if isinstance(exc, DsWizardError) else str(exc)
            verdict.update(f"[$error]✘ {safe_markup(message)}[/]")
            return False
        self._saved_text = self.result.text
        shown = safe_markup(self.state.output)
        if backup is not None:
            kept = f" (previous file kept as {safe_markup(backup.name)})"
        else:
            kept = "" if written else " (it already held this config)"
        mark = "[$success]✔ check: valid[/]" if valid else "[$error]✘ check: invalid[/]"
        also = f" and {safe_markup(script.name)} for that machine" if script is not None else ""
        verdict.update(f"Saved {shown}{kept}{also} · {mark} · {safe_markup(' · '.join(lines))}")
        self._show_diff()
        self.notify(f"Saved {shown}{also}")
        return True

    def ready(self) -> str | None:
        if self._result_now() is None:
            return "finish the batch step first"
        if not self.saved:
            return "save the config first (^s): the launch step runs the saved file"
        return None
