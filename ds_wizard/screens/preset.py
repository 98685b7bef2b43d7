"""Step 2: pick a preset (built-in, local, team, user, or a file path) and preview it."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.syntax import Syntax
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.markup import escape
from textual.widgets import DataTable, Input, Static

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.base.text import sanitize
from ds_wizard.core.config.views import PresetSummary, summarize_all
from ds_wizard.core.plan.params import count_params
from ds_wizard.core.presets.lookup import (
    DEFAULT_PRESET,
    Preset,
    load_preset,
    read_preset_file,
    read_preset_text,
)
from ds_wizard.screens.base import WizardScreen
from ds_wizard.screens.dialogs import AskTextScreen
from ds_wizard.screens.state import save_current_as_preset
from ds_wizard.screens.widgets import OrderedInput

if TYPE_CHECKING:
    from ds_wizard.screens.context import WizardContext


class PresetScreen(WizardScreen):
    step = "preset"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+o", "open_path", "Load path", id="preset.open_path",
                tooltip="Load a preset from a TOML file path"),
        Binding("ctrl+s", "save_user_preset", "Save as mine", id="preset.save_user_preset",
                tooltip="Save the chosen preset, with this batch, as a user preset"),
    ]

    def __init__(self, ctx: WizardContext) -> None:
        super().__init__(ctx)
        self.listed: dict[str, PresetSummary] = {}  # what `ds-wizard presets` lists
        self.presets: dict[str, Preset] = {}  # loaded once highlighted, or from a path
        self.rows: list[str] = []
        self.problem: str | None = None  # why the highlighted preset cannot be used

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="preset-body", classes="body"):
            with Vertical(id="preset-left"):
                yield DataTable(id="preset-table", cursor_type="row", zebra_stripes=True)
                yield Static("", id="preset-desc")
            with VerticalScroll(id="preset-preview"):
                yield Static("", id="preset-file")
        yield OrderedInput(id="preset-path",
                           placeholder="Load a preset from a path: type it, Enter")

    def on_mount(self) -> None:
        table = self.query_one("#preset-table", DataTable)
        table.add_columns("Preset", "Type", "Parameters", "From", "Description")
        # the CLI's listing: a broken file in a shared directory shows as such, not hiding
        # the others
        for summary in summarize_all(self.ctx.cwd):
            self.listed[summary.name] = summary
            if summary.error is not None:
                self._add_row(summary.name, "?", "invalid", summary.source, summary.error)
            else:
                self._add_row(summary.name, summary.arch, f"{summary.params:,}", summary.source,
                              summary.description)

    def _add(self, preset: Preset) -> str:
        key = preset.name if preset.source != "path" else str(preset.path)
        self.presets[key] = preset
        spec = preset.spec
        self._add_row(key, spec.model.arch, f"{count_params(spec.model):,}", preset.source,
                      spec.description)
        return key

    def _add_row(self, key: str, arch: str, params: str, source: str, desc: str) -> None:
        table = self.query_one("#preset-table", DataTable)
        if key in self.rows:
            table.remove_row(key)
            self.rows.remove(key)
        name = key if len(key) <= 24 else "…" + key[-23:]
        # names and descriptions come from files: no escapes, and no Rich markup either
        table.add_row(Text(sanitize(name)), arch, params, source, Text(sanitize(desc)), key=key)
        self.rows.append(key)

    def refresh_from_state(self) -> None:
        ref = self.state.preset_ref
        if ref is None and self.rows:
            ref = DEFAULT_PRESET if DEFAULT_PRESET in self.rows else self.rows[0]
        if ref is not None and ref not in self.rows:
            self._load_path(ref)
        if ref in self.rows:
            self._show(ref)

    def _show(self, key: str) -> None:
        self.query_one("#preset-table", DataTable).move_cursor(row=self.rows.index(key))
        self._select(key)

    @on(DataTable.RowHighlighted, "#preset-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self._select(event.row_key.value)

    def _preset(self, key: str) -> Preset:
        """The preset behind a row, read on first use."""
        if key not in self.presets:
            summary = self.listed[key]
            if summary.error is not None:
                raise DsWizardError(summary.error)
            self.presets[key] = read_preset_file(summary.path, summary.name, summary.source)
        return self.presets[key]

    def _select(self, key: str) -> None:
        desc = self.query_one("#preset-desc", Static)
        preview = self.query_one("#preset-file", Static)
        try:
            preset = self._preset(key)
        except DsWizardError as exc:
            # what is highlighted is what the user chose: never carry on with the preset
            # highlighted before it
            self.problem = f"{key}: {sanitize(exc.one_line())}"
            self.state.preset_ref = key
            self.state.preset = None
            desc.update(f"[$error]✘ {escape(sanitize(exc.one_line()))}[/]")
            preview.update("")
            return
        self.problem = None
        self.state.preset_ref = key
        self.state.preset = preset
        spec = preset.spec
        # a shipped preset's absolute path says nothing useful and varies per install
        where = str(preset.path) if preset.source == "path" or preset.path is None \
            else f"{preset.source}: {preset.path.name}"
        desc.update(
            f"[b]{escape(sanitize(preset.name))}[/b] · {spec.model.arch} · "
            f"[b]{count_params(spec.model):,}[/b] parameters\n"
            f"{escape(sanitize(spec.description))}\n[dim]{escape(sanitize(where))}[/dim]"
        )
        try:  # read again for the preview: size-capped, regular files only, like the load
            text = sanitize(read_preset_text(preset.path), keep_newlines=True) \
                if preset.path else ""
        except DsWizardError as exc:
            text = f"# {sanitize(exc.one_line())}"
        preview.update(Syntax(text, "toml", theme="ansi_dark", word_wrap=False,
                              background_color="default"))

    def action_open_path(self) -> None:
        self.query_one("#preset-path", Input).focus()

    @on(Input.Submitted, "#preset-path")
    def _path_submitted(self, event: Input.Submitted) -> None:
        if self._load_path(event.value.strip()):
            event.input.value = ""
            self.query_one("#preset-table", DataTable).focus()

    def _load_path(self, ref: str) -> bool:
        if not ref:
            return False
        try:
            preset = load_preset(ref, self.ctx.cwd)
        except DsWizardError as exc:
            self.notify(sanitize(exc.one_line()), title="Cannot load preset", severity="error",
                        markup=False)
            return False
        self._show(self._add(preset))
        return True

    def action_save_user_preset(self) -> None:
        if self.state.preset is None:
            return

        def done(name: str | None) -> None:
            if not name:
                return
            try:
                path = save_current_as_preset(self.state, name)
                preset = read_preset_file(path, name, "user")
            except DsWizardError as exc:
                self.notify(sanitize(exc.one_line()), title="Not saved", severity="error",
                            markup=False)
                return
            self.notify(f"Saved as user preset {name!r} ({path})", markup=False)
            self._show(self._add(preset))

        self.app.push_screen(
            AskTextScreen("Save the current choices as a new user preset", "name, e.g. my_7b",
                          cursor_blink=self.ctx.cursor_blink),
            done,
        )

    def ready(self) -> str | None:
        if self.problem is not None:
            return f"this preset is invalid: {self.problem}"
        if self.state.preset is None:
            return "choose a preset"
        return None

