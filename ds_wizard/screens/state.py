"""What the user chose on each step, and thin glue from those choices to ds_wizard.core.

Screens read and write one :class:`WizardState` held by the app, so moving back and
forth keeps every answer. Nothing here decides a batch size or writes a config format:
those calls go to the core, the same functions ``ds-wizard --auto`` uses.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ds_wizard.core.batch import batchmath
from ds_wizard.core.plan.gpus import GpuInventory
from ds_wizard.core.presets.lookup import Preset

if TYPE_CHECKING:
    from ds_wizard.core.batch.topology import Topology
    from ds_wizard.core.config.auto import AutoResult
    from ds_wizard.core.plan.fit import GpuMemory

# Which of the three batch values DeepSpeed is left to derive; "none" sends all three,
# which is how a hand-written config is checked.
DERIVE_CHOICES: tuple[str, ...] = ("global", "gas", "micro", "none")
DERIVE_LABELS = {
    "global": "global batch",
    "gas": "gradient accumulation",
    "micro": "micro-batch",
    "none": "nothing (check all three)",
}
CPU_DEMO_PRESET = "tiny_mamba"
CPU_DEMO_RANKS = 2
CPU_DEMO_STEPS = 30  # long enough to see the loss fall, short enough for a laptop


@dataclass
class WizardState:
    report: GpuInventory | None = None
    nodes: int = 1
    gpus_per_node: int | None = None  # None: take the detected count
    cpu_demo: bool = False
    preset_ref: str | None = None
    preset: Preset | None = None
    # the raw text of each field, so Back/Next restores exactly what was typed
    micro_text: str = ""
    gas_text: str = ""
    global_text: str = ""
    derive: str = "global"
    batch_for: tuple[str, int] | None = None  # the batch_key the texts were filled for
    output: str = "ds_config.json"
    saved_path: Path | None = None
    runs_dir: Path = Path("runs")
    train_steps: int | None = None  # None: the preset's total_steps
    hostfile: str = ""  # a DeepSpeed hostfile: its hosts and slots decide the nodes
    # planning for another machine: its GPU, a catalog name (core.plan.flops.GPU_CATALOG)
    # or a memory size such as 80GiB; "" leaves the memory unchecked
    other_gpu: str = ""
    # what `ds-wizard tune` measured from the batch step: micro-batch → its measurement
    measured: dict[int, Any] = field(default_factory=dict)

    def other_gpu_memory(self) -> GpuMemory | None:
        """The memory of the other machine's GPU, when one was picked or typed."""
        from ds_wizard.core.plan.fit import GpuMemory, parse_size
        from ds_wizard.core.plan.flops import catalog_gpu

        text = self.other_gpu.strip()
        if not text:
            return None
        gpu = catalog_gpu(text)
        if gpu is not None:
            return GpuMemory(gpu.memory_bytes, f"picked: {gpu.name}")
        return GpuMemory(parse_size(text), f"typed: {text}")
    trackers: tuple[str, ...] | None = None  # the review step's choice; None: the preset's

    @property
    def steps(self) -> int | None:
        if self.train_steps is None and self.cpu_demo:
            return CPU_DEMO_STEPS
        return self.train_steps

    @property
    def ranks_per_node(self) -> int:
        if self.cpu_demo:
            return CPU_DEMO_RANKS
        if self.gpus_per_node is not None:
            return self.gpus_per_node
        return self.report.count if self.report else 0

    def topology(self) -> Topology:
        """Nodes × ranks per node, by the same function the CLI uses (TopologyError if
        the hostfile or the counts do not make a job)."""
        from ds_wizard.core.batch.topology import resolve_topology

        if self.cpu_demo:
            return resolve_topology(num_gpus=CPU_DEMO_RANKS)
        if self.hostfile.strip():
            return resolve_topology(hostfile=self.hostfile.strip(),
                                    gpus_per_node=self.gpus_per_node)
        return resolve_topology(num_nodes=self.nodes, gpus_per_node=self.ranks_per_node)

    @property
    def detected(self) -> int:
        return self.report.count if self.report else 0

    @property
    def planning_elsewhere(self) -> bool:
        """The GPUs asked for are not on this machine: the wizard writes the config and a
        launch script for that machine, and launches nothing here."""
        if self.cpu_demo or self.report is None:
            return False
        return self.nodes > 1 or self.ranks_per_node > self.detected

    @property
    def machine_label(self) -> str:
        """``2 nodes × 8 GPUs`` — the machine the plan is for."""
        nodes = f"{self.nodes} nodes × " if self.nodes > 1 else ""
        return f"{nodes}{self.ranks_per_node} GPU(s), this machine has {self.detected}"

    @property
    def uses_cpu(self) -> bool:
        """Ranks here would be CPU processes (the demo, or no GPU at all)."""
        return self.cpu_demo or (self.report is not None and self.detected == 0)

    @property
    def rank_word(self) -> str:
        return "rank" if self.uses_cpu and not self.planning_elsewhere else "GPU"

    @property
    def world_size(self) -> int:
        """The data-parallel size; 0 while the GPU step's answers do not make a job."""
        from ds_wizard.core.batch.topology import TopologyError

        if not self.cpu_demo and not self.hostfile.strip() and self.ranks_per_node < 1:
            return 0
        try:
            return self.topology().data_parallel
        except TopologyError:
            return 0

    @property
    def batch_key(self) -> tuple[str, int] | None:
        """What the batch fields depend on: the preset and the world size."""
        if self.preset is None:
            return None
        return self.preset_ref or self.preset.name, self.world_size

    def batch_view(self) -> BatchView | None:
        """What DeepSpeed makes of the batch fields as they stand."""
        if self.preset is None:
            return None
        return evaluate_batch(self.micro_text, self.gas_text, self.global_text, self.derive,
                              self.world_size, self.preset.spec.train.seq_len)

    @property
    def chosen(self) -> tuple[int, int] | None:
        """(micro, gas) when the batch step, filled for this preset and world size, is valid."""
        if self.batch_for is None or self.batch_for != self.batch_key:
            return None
        view = self.batch_view()
        if view is None or view.resolution is None or not view.valid:
            return None
        res = view.resolution
        if res.micro_batch is None or res.grad_accum is None:
            return None
        return res.micro_batch, res.grad_accum


@dataclass(frozen=True)
class FieldValue:
    value: int | None
    error: str | None = None


def parse_field(label: str, text: str) -> FieldValue:
    """Field text → int, or an inline error. Empty means "not given"."""
    raw = text.strip()
    if not raw:
        return FieldValue(None)
    try:
        value = int(raw)
    except ValueError:
        return FieldValue(None, f"{label}: {raw!r} is not a whole number")
    if value < 1:
        # still handed to resolve(), so DeepSpeed's own message shows too
        return FieldValue(value, f"{label} must be 1 or more")
    too_big = batchmath.too_large(label, value)
    if too_big:
        # the CLI's limit and words; such a value is not worked with at all
        return FieldValue(None, too_big)
    return FieldValue(value)


@dataclass(frozen=True)
class BatchView:
    """Everything the batch screen shows for the current text of the three fields."""

    micro: FieldValue
    gas: FieldValue
    global_: FieldValue
    resolution: batchmath.Resolution | None
    solution: batchmath.Solution | None
    seq_len: int
    world_size: int

    @property
    def valid(self) -> bool:
        return self.resolution is not None and self.resolution.valid

    @property
    def field_errors(self) -> list[str]:
        return [f.error for f in (self.micro, self.gas, self.global_) if f.error]

    @property
    def tokens_per_step(self) -> int | None:
        if not self.valid or self.resolution is None or self.resolution.train_batch_size is None:
            return None
        return self.resolution.train_batch_size * self.seq_len


def evaluate_batch(
    micro_text: str, gas_text: str, global_text: str, derive: str, world_size: int, seq_len: int
) -> BatchView:
    """Ask the core what DeepSpeed would make of the fields, leaving out the derived one."""
    micro = parse_field("micro-batch", micro_text)
    gas = parse_field("gradient accumulation", gas_text)
    glob = parse_field("global batch", global_text)
    values = {"micro": micro.value, "gas": gas.value, "global": glob.value}
    if derive in values:
        values[derive] = None
    unparsable = any(
        f.value is None and f.error for name, f in
        (("micro", micro), ("gas", gas), ("global", glob)) if name != derive
    )
    resolution = None
    if world_size >= 1 and not unparsable:
        resolution = batchmath.resolve(values["global"], values["micro"], values["gas"],
                                       world_size)
    # The derived field's text is an output, last written from the previous keystroke:
    # its own error would be stale. DeepSpeed's verdict on the derived value shows instead.
    if derive == "micro":
        micro = FieldValue(resolution.micro_batch if resolution else None)
    elif derive == "gas":
        gas = FieldValue(resolution.grad_accum if resolution else None)
    elif derive == "global":
        glob = FieldValue(resolution.train_batch_size if resolution else None)
    target = resolution.train_batch_size if resolution is not None else None
    solution = None
    if target is not None and target >= 1 and world_size >= 1:
        solution = batchmath.solve(world_size, target)
    return BatchView(micro, gas, glob, resolution, solution, seq_len, world_size)


def script_path(state: WizardState) -> Path | None:
    """The launch script saved next to the config when planning for another machine."""
    if state.saved_path is None or not state.planning_elsewhere:
        return None
    return state.saved_path.with_name(state.saved_path.stem + ".launch.sh")


def where_script(state: WizardState) -> str:
    path = script_path(state)
    return f" and {path.name}" if path is not None and path.exists() else ""


def launch_script_text(state: WizardState) -> str:
    """A script that launches the saved config on the machine it was planned for."""
    assert state.saved_path is not None and state.preset is not None
    ref = state.preset_ref or state.preset.name
    if state.preset.source == "path" and state.preset.path is not None:
        ref = str(state.preset.path)
    launch = ["ds-wizard", "launch", "--preset", ref, "--config", state.saved_path.name,
              "--num-gpus", str(state.ranks_per_node)]
    lines = ["#!/usr/bin/env bash",
             f"# Written by the ds-wizard TUI for {state.machine_label}.",
             "# Run it there, from the directory holding the config.",
             "set -euo pipefail",
             'cd "$(dirname "$0")"']
    if state.nodes > 1:
        lines += [f"# {state.nodes} nodes: start it with DeepSpeed's launcher and a hostfile,",
                  f"#   deepspeed --hostfile hostfile --num_gpus {state.ranks_per_node} "
                  f"-m ds_wizard.train --deepspeed_config {state.saved_path.name} "
                  f"--preset {shlex.quote(ref)}"]
    lines.append(shlex.join(launch) + ' "$@"')
    return "\n".join(lines) + "\n"


def nearest_pair(state: WizardState, target: int) -> tuple[int, int]:
    """(micro, gas) for the global batch ``target``: the current micro-batch when it
    divides, else the largest one at or below it, else the smallest there is."""
    sol = batchmath.solve(state.world_size, target)
    pairs = sol.pairs or [(1, target // max(1, state.world_size))]
    current = parse_field("micro-batch", state.micro_text).value
    if current is not None:
        for micro, gas in pairs:  # largest micro first
            if micro <= current:
                return micro, gas
    return pairs[-1]


def headless_command(state: WizardState, micro: int, gas: int) -> str:
    """The command line that writes the same file without the wizard."""
    preset = state.preset
    ref = state.preset_ref or (preset.name if preset else "")
    if preset is not None and preset.source == "path" and preset.path is not None:
        ref = str(preset.path)
    args = ["ds-wizard", "--auto", *shlex.split(state.topology().flags()), "--preset", ref]
    # always explicit: on a machine with GPUs, --auto alone would fit the micro-batch to
    # their memory and could pick another one
    args += ["--micro-batch", str(micro), "--grad-accum", str(gas), "--output", state.output]
    if state.trackers is not None:
        args += ["--monitor", ",".join(state.trackers) or "none"]
    return shlex.join(args)


def default_batch(state: WizardState) -> tuple[int, int, int] | None:
    """The preset's own choice for this world size: (micro, gas, global)."""
    from ds_wizard.core.batch.choice import choose_batch

    if state.preset is None or state.world_size < 1:
        return None
    choice = choose_batch(state.preset.spec, state.world_size)
    return choice.micro_batch, choice.grad_accum, choice.global_batch


@dataclass(frozen=True)
class ConfigResult:
    """The config ``auto_configure`` chose, its JSON text, and the GPU memory it planned for."""

    auto: AutoResult
    text: str
    gpu_memory: GpuMemory | None  # None: no GPU seen, the memory was not checked
    # what `ds-wizard tune` measured here for this split (core.plan.measured), if it ran it
    measured: dict[str, Any] | None = None

    @property
    def strategy(self) -> str:
        """``ZeRO-2``, ``ZeRO-3 + optimizer offload``, …"""
        from ds_wizard.core.plan.memory import Strategy

        zero = self.auto.config["zero_optimization"]
        return Strategy(self.auto.zero_stage, offload_optimizer="offload_optimizer" in zero,
                        offload_param="offload_param" in zero).label


def build_config_text(state: WizardState, micro: int, gas: int) -> ConfigResult:
    """The DeepSpeed JSON for the current choices: ``auto_configure`` with the same inputs
    ``ds-wizard --auto`` takes on this machine (detected GPUs and their memory)."""
    from ds_wizard.core.config.auto import auto_configure
    from ds_wizard.core.config.dsconfig import dumps
    from ds_wizard.core.plan.fit import gpu_memory_from

    assert state.preset is not None
    gpu_memory = gpu_memory_from(None, state.report)
    if state.planning_elsewhere and state.other_gpu.strip():
        gpu_memory = state.other_gpu_memory()  # the other machine's GPU, not this one's
    preset = state.preset
    if state.trackers is not None:
        from dataclasses import replace

        # the same door as `--auto --monitor`: the preset's [monitor] trackers
        spec = preset.spec
        preset = replace(preset, spec=replace(spec, monitor=replace(
            spec.monitor, trackers=list(state.trackers))))
    result = auto_configure(preset, state.world_size, gpu_report=state.report,
                            micro_batch=micro, grad_accum=gas, gpu_memory=gpu_memory)
    return ConfigResult(result, dumps(result.config), gpu_memory, measured_here(state, result))


def measured_here(state: WizardState, result: AutoResult) -> dict[str, Any] | None:
    """The tune record's measurement of this very split on this machine, if any."""
    if state.planning_elsewhere or state.preset is None:
        return None
    from ds_wizard.core.plan.measured import here_entry

    entry = here_entry(state.preset.spec, state.world_size, state.report)
    if entry is None:
        return None
    c = result.choice
    for row in entry.candidates:
        if (row.get("micro_batch"), row.get("grad_accum"), row.get("zero_stage")) == (
                c.micro_batch, c.grad_accum, result.zero_stage) \
                and row.get("measured_peak_bytes"):
            return row
    return None


def check_saved(path: Path, world_size: int) -> tuple[bool, list[str]]:
    """Re-read the saved file and run ``check`` on it, as ``ds-wizard check`` would."""
    from ds_wizard.core.check.checker import check_config, load_config_file

    report = check_config(load_config_file(path), world_size)
    lines = [report.formula] if report.valid else report.errors[:2]
    return report.valid, lines


def save_current_as_preset(state: WizardState, name: str) -> Path:
    """The chosen preset, with the batch chosen on the batch step, as a user preset."""
    from ds_wizard.core.presets.overrides import with_batch
    from ds_wizard.core.presets.store import derive_spec, save_user_preset

    assert state.preset is not None
    spec = derive_spec(state.preset.spec, state.preset.name)
    if state.chosen is not None:
        spec = with_batch(spec, state.world_size, *state.chosen)
    return save_user_preset(name, spec)
