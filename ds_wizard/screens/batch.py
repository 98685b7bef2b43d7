"""Step 3: tune micro-batch, gradient accumulation and global batch, live.

Every keystroke asks ``core.batch.resolve`` — DeepSpeed's own arithmetic and messages —
and ``core.batch.solve`` for the valid (micro, gas) pairs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Label, OptionList, RadioButton, RadioSet, Static
from textual.widgets.option_list import Option
from textual.worker import get_current_worker

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.plan.memory import DEFAULT_HEADROOM
from ds_wizard.screens.base import WizardScreen
from ds_wizard.screens.state import (
    DERIVE_CHOICES,
    DERIVE_LABELS,
    BatchView,
    ConfigResult,
    build_config_text,
    default_batch,
    nearest_pair,
)
from ds_wizard.screens.widgets import MarkedRadioButton, OrderedInput

if TYPE_CHECKING:
    from ds_wizard.screens.context import WizardContext

FIELDS = {"micro": "#micro", "gas": "#gas", "global": "#global"}
MAX_PAIRS = 12


class BatchScreen(WizardScreen):
    step = "batch"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+g", "cycle_derive", "Derived value", id="batch.cycle_derive",
                tooltip="Choose which value DeepSpeed derives from the other two"),
        Binding("ctrl+r", "reset", "Preset default", id="batch.reset",
                tooltip="Back to the preset's own batch for this world size"),
    ]

    def __init__(self, ctx: WizardContext) -> None:
        super().__init__(ctx)
        self.view: BatchView | None = None
        self._last_field: Input | None = None
        self.recomputes = 0  # how often the view was worked out (a test counts them)

    def compose_body(self) -> ComposeResult:
        with Vertical(id="batch-body", classes="body"):
            yield Static("", id="batch-context")
            with Horizontal(id="batch-fields", classes="fields"):
                for key, label in (("micro", "Micro-batch per GPU"),
                                   ("gas", "Gradient accumulation"),
                                   ("global", "Global batch")):
                    with Vertical(classes="field"):
                        yield Label(label, id=f"{key}-label")
                        yield OrderedInput(id=key, placeholder="auto")
            yield Static("", id="field-errors")
            yield Static("", id="formula")
            yield Static("", id="tokens")
            yield Static("", id="memory")
            with Horizontal(id="batch-lower"):
                with RadioSet(id="derive"):
                    for key in DERIVE_CHOICES:
                        yield MarkedRadioButton(DERIVE_LABELS[key], id=f"derive-{key}")
                yield OptionList(id="pairs")

    def on_mount(self) -> None:
        self.query_one("#derive", RadioSet).border_title = "Derived by DeepSpeed"
        self.query_one("#pairs", OptionList).border_title = "Valid micro × accumulation"

    # -- state <-> widgets -------------------------------------------------------------
    def refresh_from_state(self) -> None:
        state = self.state
        if state.preset is None:
            return
        if state.batch_for != state.batch_key:
            # new preset or GPU count: start from the preset's own choice for it
            default = default_batch(state)
            if default is not None:
                micro, gas, glob = default
                state.micro_text, state.gas_text, state.global_text = (
                    str(micro), str(gas), str(glob))
            state.derive = "global"
            state.batch_for = state.batch_key
        # filling the widgets from the state is not an edit: their messages are dropped,
        # including any already queued, and the view is worked out once below
        with self.prevent(Input.Changed, RadioSet.Changed):
            for name, selector in FIELDS.items():
                field = self.query_one(selector, Input)
                text = getattr(state, f"{name}_text")
                if field.value != text:
                    field.value = text
            self.query_one(f"#derive-{state.derive}", RadioButton).value = True
        self.query_one("#micro-label", Label).update(f"Micro-batch per {state.rank_word}")
        spec = state.preset.spec
        where = "CPU ranks" if state.uses_cpu and not state.planning_elsewhere else "GPU(s)"
        self.query_one("#batch-context", Static).update(
            f"[b]{state.preset.name}[/b] · data-parallel world size [b]{state.world_size}[/b] "
            f"({state.world_size} {where}) · sequence length {spec.train.seq_len:,}"
        )
        self._apply_derive_mode()
        self.recompute()

    def store(self) -> None:
        for name, selector in FIELDS.items():
            setattr(self.state, f"{name}_text", self.query_one(selector, Input).value)

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        if event.input.id not in FIELDS:
            return
        setattr(self.state, f"{event.input.id}_text", event.value)
        if event.input.id != self.state.derive:
            self.recompute()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        self.focus_next()

    @on(RadioSet.Changed, "#derive")
    def _derive_changed(self, event: RadioSet.Changed) -> None:
        if event.pressed.id is None:
            return
        self.state.derive = event.pressed.id.removeprefix("derive-")
        self._apply_derive_mode()
        self.recompute()

    def action_cycle_derive(self) -> None:
        i = DERIVE_CHOICES.index(self.state.derive)
        self.query_one(f"#derive-{DERIVE_CHOICES[(i + 1) % len(DERIVE_CHOICES)]}",
                       RadioButton).value = True

    def action_reset(self) -> None:
        self.state.batch_for = None
        self.refresh_from_state()

    def _apply_derive_mode(self) -> None:
        for name, selector in FIELDS.items():
            derived = name == self.state.derive
            self.query_one(selector, Input).disabled = derived
            self.query_one(f"#{name}-label", Label).set_class(derived, "derived")
        # disabling the focused field moves focus; give it back once the field is editable
        last = self._last_field
        if last is not None and not last.disabled and self.focused is not last \
                and isinstance(self.focused, Input | None):
            last.focus()

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        if isinstance(event.widget, Input) and event.widget.id in FIELDS:
            self._last_field = event.widget

    # -- the live part -----------------------------------------------------------------
    def recompute(self) -> None:
        state = self.state
        view = state.batch_view()
        if view is None:
            return
        self.recomputes += 1
        self.view = view
        res = view.resolution
        if state.derive in FIELDS:
            # derived from the current fields only: with an invalid field there is nothing
            # to derive, and the last valid value must not stand next to the error
            value = None if res is None else {"micro": res.micro_batch, "gas": res.grad_accum,
                                              "global": res.train_batch_size}[state.derive]
            field = self.query_one(FIELDS[state.derive], Input)
            text = "" if value is None else str(value)
            setattr(state, f"{state.derive}_text", text)
            with self.prevent(Input.Changed):
                field.value = text

        errors = self.query_one("#field-errors", Static)
        errors.update("\n".join(f"✘ {e}" for e in view.field_errors))
        errors.display = bool(view.field_errors)

        formula = self.query_one("#formula", Static)
        formula.set_class(view.valid, "ok")
        formula.set_class(res is not None and not res.valid, "bad")
        if res is None:
            formula.update("Fill in the fields above.")
        elif res.valid:
            formula.update(f"✔ [b]{res.formula}[/b]   DeepSpeed accepts this")
        else:
            shown = res.formula or ""
            prefix = f"✘ [b]{shown}[/b]\n" if shown else "✘ "
            formula.update(f"{prefix}{res.error_type}: {res.error}")

        tokens = self.query_one("#tokens", Static)
        if view.tokens_per_step is not None and res is not None:
            tokens.update(
                f"Tokens per step: [b]{view.tokens_per_step:,}[/b] "
                f"({res.train_batch_size} × {view.seq_len:,})"
            )
        else:
            tokens.update("Tokens per step: —")
        self._show_memory(view)
        self._show_pairs(view)

    def _show_memory(self, view: BatchView) -> None:
        memory = self.query_one("#memory", Static)
        res = view.resolution
        if not view.valid or res is None or res.micro_batch is None or res.grad_accum is None:
            memory.update(f"Memory per {self.state.rank_word}: —")
            return
        self._fit_memory(res.micro_batch, res.grad_accum)

    @work(thread=True, exclusive=True, group="memory-fit", name="memory fit",
          exit_on_error=False)
    def _fit_memory(self, micro: int, gas: int) -> None:
        """The memory fit off the UI thread; only the latest request's answer is shown."""
        state = self.state
        try:
            shown: Text | str = memory_bar(build_config_text(state, micro, gas),
                                           per=state.rank_word)
        except DsWizardError as exc:
            shown = Text(f"✘ {exc.one_line()}", style="bold red")
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self.query_one("#memory", Static).update, shown)

    def _show_pairs(self, view: BatchView) -> None:
        pairs = self.query_one("#pairs", OptionList)
        pairs.clear_options()
        sol = view.solution
        if sol is None:
            pairs.border_title = "Valid micro × accumulation"
            return
        pairs.border_title = f"Valid micro × accumulation for {sol.target}"
        current = None
        if view.resolution is not None:
            current = (view.resolution.micro_batch, view.resolution.grad_accum)
        options: list[Option] = []
        for micro, gas in sol.pairs[:MAX_PAIRS]:
            mark = "●" if (micro, gas) == current else " "
            options.append(Option(f"{mark} {micro} × {gas} × {sol.world_size}",
                                  id=f"pair:{micro}:{gas}"))
        if not sol.exact:
            pairs.border_title = f"{sol.target} is not reachable on {sol.world_size}"
            for label, value in (("nearest below", sol.lower), ("nearest above", sol.upper)):
                if value is not None:
                    options.append(Option(f"  use global {value} ({label})",
                                          id=f"global:{value}"))
        pairs.add_options(options)

    @on(OptionList.OptionSelected, "#pairs")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        option_id = event.option.id or ""
        kind, _, rest = option_id.partition(":")
        state = self.state
        if kind == "pair":
            micro, gas = rest.split(":")
            sol = self.view.solution if self.view else None
            state.micro_text, state.gas_text = micro, gas
            if sol is not None:
                state.global_text = str(sol.target)
        elif kind == "global":
            # a whole valid triple for that global batch, so the formula is green in
            # every mode (in "check all three" no field is derived to make it so)
            micro, gas = nearest_pair(state, int(rest))
            state.micro_text, state.gas_text, state.global_text = str(micro), str(gas), rest
            if state.derive == "global":
                state.derive = "gas"
        self.refresh_from_state()

    def ready(self) -> str | None:
        if self.state.batch_for != self.state.batch_key:
            # reached through a jump after the preset or GPU count changed
            return "the preset or GPU count changed: check the batch"
        self.recompute()
        view = self.view
        if view is None or view.resolution is None:
            return "fill in the batch fields"
        if not view.valid:
            return f"DeepSpeed would reject this: {view.resolution.error}"
        return None


def memory_bar(result: ConfigResult, width: int = 20, per: str = "GPU") -> Text:
    """``Memory/GPU ██████░░░░ 92.6 of 140.4 GiB · ZeRO-2`` — green when it fits."""
    est, gpu = result.auto.memory, result.gpu_memory
    if est is None or gpu is None:
        return Text(f"Memory per {per}: not checked (GPU memory unknown) · {result.strategy}",
                    style="dim")
    fits = est.fits(gpu.bytes, DEFAULT_HEADROOM)
    filled = min(width, round(width * est.total / gpu.bytes))
    text = Text(f"Memory per {per} ")
    text.append("█" * filled, style="green" if fits else "red")
    text.append("░" * (width - filled), style="dim")
    text.append(f" {est.total / 2**30:.1f} of {gpu.bytes / 2**30:.1f} GiB", style="bold")
    text.append(f" · {result.strategy}")
    if not fits:
        text.append(f" · over the {DEFAULT_HEADROOM:.0%} headroom", style="red")
    return text
