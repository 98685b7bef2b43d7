"""Step 1: which GPUs, how many nodes — or a CPU demo when there is no GPU."""

from __future__ import annotations

import copy
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.widgets import DataTable, Input, Label, Select, Static

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.batch.topology import TopologyError
from ds_wizard.core.plan.flops import GPU_CATALOG, catalog_gpu
from ds_wizard.messages import GpusDetected
from ds_wizard.screens.base import StepBar, WizardScreen
from ds_wizard.screens.doctor_panel import DoctorPanel
from ds_wizard.screens.state import CPU_DEMO_PRESET, CPU_DEMO_RANKS, parse_field
from ds_wizard.screens.widgets import OrderedInput, safe_markup


class GpuScreen(WizardScreen):
    step = "gpus"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "redetect", "Re-detect", id="gpus.redetect",
                tooltip="Ask NVML again which GPUs this machine has"),
        Binding("ctrl+t", "cpu_demo", "CPU demo", id="gpus.cpu_demo",
                tooltip="Toggle a CPU demo run here: tiny_mamba on 2 CPU ranks"),
        # not in the footer (its snapshot is shared with the screens being refactored);
        # docs/tui.md lists the key
        Binding("ctrl+d", "doctor", "Doctor", id="gpus.doctor", show=False,
                tooltip="Can this machine (and every host) run the job? (ds-wizard doctor)"),
    ]

    def compose_body(self) -> ComposeResult:
        with Vertical(id="gpu-body", classes="body"):
            yield Static("Detecting GPUs…", id="gpu-status")
            yield DataTable(id="gpu-table", cursor_type="row", zebra_stripes=True)
            yield Static("", id="no-gpu")
            with Horizontal(id="gpu-fields", classes="fields"):
                with Vertical(classes="field"):
                    yield Label("Nodes")
                    yield OrderedInput(id="nodes", type="text", placeholder="1")
                with Vertical(classes="field"):
                    yield Label("GPUs per node")
                    yield OrderedInput(id="per-node", type="text", placeholder="detected")
                with Vertical(classes="field"):
                    yield Label("Hostfile (multi-node)")
                    yield OrderedInput(id="hostfile", type="text", placeholder="none")
            # planning for another machine: which GPU it has, so the memory is checked
            with Horizontal(id="other-gpu-row", classes="fields"):
                with Vertical(classes="field", id="other-gpu-field"):
                    yield Label("Its GPU")
                    yield Select([(g.label, g.name) for g in GPU_CATALOG], id="other-gpu",
                                 prompt="not known", allow_blank=True)
                with Vertical(classes="field", id="other-memory-field"):
                    yield Label("or its memory")
                    yield OrderedInput(id="other-memory", type="text", placeholder="80GiB")
            yield Static("", id="gpu-summary")
            yield DoctorPanel(id="doctor")

    def on_mount(self) -> None:
        table = self.query_one("#gpu-table", DataTable)
        table.add_columns("#", "Name", "Memory", "CC", "bf16")
        if self.state.report is None:
            self.action_redetect()

    def action_redetect(self) -> None:
        self.query_one("#gpu-status", Static).update("Detecting GPUs…")
        probe = self.ctx.gpu_probe

        def work() -> None:
            # NVML can take a while on a busy machine: keep it off the UI thread
            self.post_message(GpusDetected(probe()))

        self.run_worker(work, thread=True, exclusive=True, group="gpu-probe", name="GPU probe",
                        exit_on_error=False)

    def action_doctor(self) -> None:
        # the answers as they are now: the worker must not read them while they change
        doctor, state = self.ctx.doctor, copy.copy(self.state)
        self.query_one(DoctorPanel).check(lambda: doctor(state))

    def on_gpus_detected(self, message: GpusDetected) -> None:
        self.state.report = message.report
        self.refresh_from_state()

    def action_cpu_demo(self) -> None:
        self.state.cpu_demo = not self.state.cpu_demo
        if self.state.cpu_demo:
            self.state.preset_ref = CPU_DEMO_PRESET
            self.notify(f"CPU demo: {CPU_DEMO_PRESET} on {CPU_DEMO_RANKS} CPU ranks. ^n to go on.")
        self.refresh_from_state()

    def refresh_from_state(self) -> None:
        state = self.state
        report = state.report
        table = self.query_one("#gpu-table", DataTable)
        table.clear()
        status = self.query_one("#gpu-status", Static)
        no_gpu = self.query_one("#no-gpu", Static)
        nodes = self.query_one("#nodes", Input)
        per_node = self.query_one("#per-node", Input)
        if report is None:
            status.update("Detecting GPUs…")
        else:
            for g in report.gpus:
                table.add_row(
                    str(g.index), g.name, f"{g.memory_total / 2**30:.1f} GiB",
                    f"{g.compute_capability[0]}.{g.compute_capability[1]}",
                    "yes" if g.bf16 else "no",
                )
            parts = [f"{report.count} GPU(s) detected"]
            if report.driver_version:
                parts.append(f"driver {report.driver_version}")
            if report.cuda_visible_devices is not None:
                parts.append(f"CUDA_VISIBLE_DEVICES={report.cuda_visible_devices}")
            status.update(" · ".join(parts))
        none_found = report is not None and not report.gpus
        table.display = not none_found
        no_gpu.display = none_found
        if none_found:
            if (self.focused is None or self.focused is table) and not per_node.disabled:
                per_node.focus()
            no_gpu.update(
                f"[b]No GPU found[/b] ({safe_markup(report.reason or '')}).\n"
                "Type a GPU count below to write a config for another machine, or press "
                f"[b]^t[/b] for a CPU demo run ({CPU_DEMO_PRESET}, {CPU_DEMO_RANKS} CPU ranks)."
            )
        hostfile = self.query_one("#hostfile", Input)
        nodes.disabled = per_node.disabled = hostfile.disabled = state.cpu_demo
        nodes.disabled = nodes.disabled or bool(state.hostfile)
        if hostfile.value != state.hostfile:
            hostfile.value = state.hostfile
        if nodes.value != str(state.nodes):
            nodes.value = str(state.nodes)
        wanted = "" if state.gpus_per_node is None else str(state.gpus_per_node)
        if state.cpu_demo:
            wanted = str(CPU_DEMO_RANKS)
        elif state.gpus_per_node is None and report is not None and report.count:
            wanted = str(report.count)
        if per_node.value != wanted:
            per_node.value = wanted
        self._show_other_gpu()
        self._summarise()

    def _show_other_gpu(self) -> None:
        """The other machine's GPU: asked only while planning for one."""
        state = self.state
        self.query_one("#other-gpu-row").display = state.planning_elsewhere
        picked = catalog_gpu(state.other_gpu)
        select = self.query_one("#other-gpu", Select)
        typed = self.query_one("#other-memory", Input)
        with self.prevent(Select.Changed, Input.Changed):
            if picked is None:
                if not select.is_blank():
                    select.clear()
            elif select.value != picked.name:
                select.value = picked.name
            text = "" if picked is not None else state.other_gpu
            if typed.value != text:
                typed.value = text

    @on(Select.Changed, "#other-gpu")
    def _other_gpu_picked(self, event: Select.Changed) -> None:
        if event.select.is_blank():
            if catalog_gpu(self.state.other_gpu) is not None:
                self.state.other_gpu = ""
        else:
            self.state.other_gpu = str(event.value)
            with self.prevent(Input.Changed):
                self.query_one("#other-memory", Input).value = ""
        self._summarise()

    @on(Input.Changed, "#other-memory")
    def _other_memory_typed(self, event: Input.Changed) -> None:
        if event.value.strip() or catalog_gpu(self.state.other_gpu) is None:
            self.state.other_gpu = event.value.strip()
        if event.value.strip():
            with self.prevent(Select.Changed):
                self.query_one("#other-gpu", Select).clear()
        self._summarise()

    @on(Input.Changed, "#nodes, #per-node, #hostfile")
    def _fields_changed(self, event: Input.Changed) -> None:
        if self.state.cpu_demo:
            return
        self.store()
        # with a hostfile, its hosts are the nodes
        self.query_one("#nodes", Input).disabled = bool(self.state.hostfile)
        self._show_other_gpu()
        self._summarise()

    def store(self) -> None:
        if self.state.cpu_demo:
            return
        nodes = parse_field("nodes", self.query_one("#nodes", Input).value)
        per = parse_field("GPUs per node", self.query_one("#per-node", Input).value)
        if nodes.value is not None and not nodes.error:
            self.state.nodes = nodes.value
        self.state.hostfile = self.query_one("#hostfile", Input).value.strip()
        report = self.state.report
        if per.value is not None and not per.error:
            detected = report.count if report else 0
            self.state.gpus_per_node = None if per.value == detected else per.value
        elif per.value is None and not per.error:
            self.state.gpus_per_node = None

    def _problem(self) -> str | None:
        if self.state.cpu_demo:
            return None
        for label, widget_id in (("nodes", "#nodes"), ("GPUs per node", "#per-node")):
            parsed = parse_field(label, self.query_one(widget_id, Input).value)
            if parsed.error:
                return parsed.error
        if not self.state.hostfile and self.state.ranks_per_node < 1:
            return "no GPUs: type a GPU count, or press ^t for a CPU demo"
        try:
            self.state.topology()
        except TopologyError as exc:
            return exc.one_line()
        if self.state.planning_elsewhere and self.state.other_gpu:
            try:
                self.state.other_gpu_memory()
            except DsWizardError as exc:
                return f"its memory: {exc.one_line()}"
        return None

    def _summarise(self) -> None:
        self.query_one(StepBar).show()
        summary = self.query_one("#gpu-summary", Static)
        problem = self._problem()
        state = self.state
        if problem:
            summary.update(f"[$error]✘ {safe_markup(problem)}[/]")
            summary.set_class(True, "error")
            return
        summary.set_class(False, "error")
        if state.cpu_demo:
            summary.update(
                f"CPU demo: [b]{CPU_DEMO_RANKS}[/b] CPU ranks, preset [b]{CPU_DEMO_PRESET}[/b] "
                "(^t to turn off)"
            )
        else:
            elsewhere = ("\n⚑ [b]Planning for another machine[/b]: the config and a launch "
                         "script are saved for it; nothing is launched here."
                         if state.planning_elsewhere and not state.topology().multi_node
                         else "")
            other = state.other_gpu_memory() if state.planning_elsewhere else None
            if other is not None:
                elsewhere += (f" Memory checked for {other.bytes / 2**30:.1f} GiB per GPU "
                              f"({escape(other.source)}).")
            topo = state.topology()
            summary.update(
                f"Data-parallel world size: [b]{state.world_size}[/b] "
                + (f"({safe_markup(topo.layout())}, {safe_markup(topo.source)})" if topo.multi_node
                   else f"({state.nodes} node(s) × {state.ranks_per_node} GPU(s))")
                + elsewhere
            )

    def ready(self) -> str | None:
        if self.state.report is None:
            return "GPU detection is still running"
        return self._problem()
