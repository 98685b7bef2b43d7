"""Step 3: tune micro-batch, gradient accumulation and global batch, live.

Every keystroke asks ``core.batch.resolve`` — DeepSpeed's own arithmetic and messages —
and ``core.batch.solve`` for the valid (micro, gas) pairs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

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
        Binding("ctrl+t", "measure", "Measure", id="batch.measure",
                tooltip="Run `ds-wizard tune` here: short real runs of the micro-batches "
                        "at this global batch; the fastest that fits fills the fields "
                        "(^t again stops it)"),
    ]
    # run_tune's signature; None: the real one (tests put a stand-in here)
    measure_runner: Callable[..., Any] | None = None

    def __init__(self, ctx: WizardContext) -> None:
        super().__init__(ctx)
        self.view: BatchView | None = None
        self._last_field: Input | None = None
        self.recomputes = 0  # how often the view was worked out (a test counts them)
        self._measure_stop: threading.Event | None = None  # set while measuring
        self._measure_text: str | None = None  # what Measure last said

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
            yield Static("", id="measure")
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
        self._show_measure()
        self.recompute()

    def _show_measure(self) -> None:
        """The Measure line: its hint, its progress, or what it found."""
        shown = self.query_one("#measure", Static)
        shown.display = not self.state.planning_elsewhere
        if self._measure_text is None:
            shown.update(Text("⏱ ^t Measure: short real runs here; the fastest split that "
                              "fits fills in", style="dim"))
        else:
            shown.update(Text(f"⏱ {self._measure_text}"))

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
            tag = measured_tag(self.state.measured.get(micro), sol.target)
            options.append(Option(f"{mark} {micro} × {gas} × {sol.world_size}{tag}",
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

    # -- Measure: `ds-wizard tune` in the background ------------------------------------
    def action_measure(self) -> None:
        state = self.state
        if self._measure_stop is not None:
            self._measure_stop.set()
            self._say_measure("stopping after the current step…")
            return
        if state.preset is None or state.world_size < 1:
            return
        if state.planning_elsewhere:
            self.notify("Measure runs on this machine; the plan is for another one "
                        "(run `ds-wizard tune` there)", severity="warning")
            return
        res = self.view.resolution if self.view is not None else None
        target = res.train_batch_size if res is not None and res.valid else None
        self._measure_stop = threading.Event()
        self._say_measure("measuring: preparing the candidates…")
        self._measure(target, self._measure_stop)

    def _say_measure(self, text: str) -> None:
        self._measure_text = text
        self._show_measure()

    @work(thread=True, exclusive=True, group="measure", name="measure", exit_on_error=False)
    def _measure(self, target: int | None, stop: threading.Event) -> None:
        from ds_wizard.launch.tune import TuneRequest

        runner = self.measure_runner
        if runner is None:
            from ds_wizard.launch.tune import run_tune as runner
        state = self.state
        request = TuneRequest(state.preset, num_gpus=state.world_size, global_batch=target,
                              output=None, runs_dir=state.runs_dir)

        def progress(event: Any) -> None:
            text = (f"candidate {event.index} of ≤{event.max_candidates}: {event.text} · "
                    f"{event.elapsed_s:.0f} s of ≤{event.bound_s / 60:.1f} min")
            self.app.call_from_thread(self._say_measure, text)
        try:
            result = runner(request, progress, stop)
        except DsWizardError as exc:
            self.app.call_from_thread(self._measure_done, None, exc.one_line())
            return
        self.app.call_from_thread(self._measure_done, result, None)

    def _measure_done(self, result: Any, error: str | None) -> None:
        self._measure_stop = None
        if result is None:
            self._say_measure(f"✘ {error}")
            return
        state = self.state
        state.measured = {m.candidate.micro_batch: m for m in result.measurements}
        chosen = result.chosen
        if chosen is None:
            self._say_measure(f"nothing fitted at global batch {result.global_batch} "
                              f"({len(result.measurements)} measured)")
            self.recompute()
            return
        c = chosen.candidate
        state.micro_text, state.gas_text = str(c.micro_batch), str(c.grad_accum)
        state.global_text = str(c.global_batch)
        self._say_measure(f"measured {len(result.measurements)}: {c.micro_batch} × "
                          f"{c.grad_accum} × {c.world_size} is the fastest that fits "
                          f"({chosen.tokens_per_s or 0:,.0f} tokens/s, peak "
                          f"{(chosen.measured_peak or 0) / 2**30:.2f} GiB)"
                          + (" · stopped" if result.interrupted else ""))
        self.refresh_from_state()

    def ready(self) -> str | None:
        if self._measure_stop is not None:
            return "measuring: wait for it, or press ^t to stop it"
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


def measured_tag(m: Any, target: int) -> str:
    """`` ⏱ 420 tok/s`` beside a split the Measure key ran at this global batch."""
    if m is None or m.candidate.global_batch != target:
        return ""
    if m.fits and m.tokens_per_s:
        return f"  ⏱ {m.tokens_per_s:,.0f} tok/s"
    return f"  ✘ {m.status}"


def memory_bar(result: ConfigResult, width: int = 20, per: str = "GPU") -> Text:
    """``Memory/GPU ██████░░░░ 92.6 of 140.4 GiB · ZeRO-2`` — green when it fits."""
    est, gpu = result.auto.memory, result.gpu_memory
    measured = result.measured
    if measured is not None:
        # `ds-wizard tune` ran this split here: its verdict stands in for the estimate
        fits = bool(measured.get("fits"))
        text = Text(f"Memory per {per}: measured here ", style="bold")
        text.append(f"{measured['measured_peak_bytes'] / 2**30:.2f} GiB peak",
                    style="green" if fits else "red")
        text.append(f" ({'fits' if fits else measured.get('status')}) · {result.strategy}")
        return text
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
