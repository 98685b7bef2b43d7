"""What the user chose on each step, and thin glue from those choices to ds_wizard.core.

Screens read and write one :class:`WizardState` held by the app, so moving back and
forth keeps every answer. Nothing here decides a batch size or writes a config format:
those calls go to the core, the same functions ``ds-wizard --auto`` uses.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ds_wizard.core import batch as batchmath
from ds_wizard.core.gpus import GpuReport
from ds_wizard.core.presets import Preset

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
    report: GpuReport | None = None
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
    batch_for: tuple[str, int] | None = None  # (preset, world size) the texts were filled for
    chosen: tuple[int, int] | None = None  # (micro, gas) once the batch step is valid
    output: str = "ds_config.json"
    saved_path: Path | None = None
    runs_dir: Path = Path("runs")
    train_steps: int | None = None  # None: the preset's total_steps

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

    @property
    def world_size(self) -> int:
        return (1 if self.cpu_demo else self.nodes) * self.ranks_per_node

    @property
    def bf16_supported(self) -> bool | None:
        return self.report.bf16_supported if self.report else None


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
    target = resolution.train_batch_size if resolution is not None else None
    solution = None
    if target is not None and target >= 1 and world_size >= 1:
        solution = batchmath.solve(world_size, target)
    return BatchView(micro, gas, glob, resolution, solution, seq_len, world_size)


def headless_command(state: WizardState, micro: int, gas: int) -> str:
    """The command line that writes the same file without the wizard."""
    preset = state.preset
    ref = state.preset_ref or (preset.name if preset else "")
    if preset is not None and preset.source == "path" and preset.path is not None:
        ref = str(preset.path)
    args = ["ds-wizard", "--auto", "--num-gpus", str(state.world_size), "--preset", ref]
    # always explicit: on a machine with GPUs, --auto alone would fit the micro-batch to
    # their memory and could pick another one
    args += ["--micro-batch", str(micro), "--grad-accum", str(gas), "--output", state.output]
    return shlex.join(args)


def default_batch(state: WizardState) -> tuple[int, int, int] | None:
    """The preset's own choice for this world size: (micro, gas, global)."""
    from ds_wizard.core.dsconfig import plan_batch

    if state.preset is None or state.world_size < 1:
        return None
    choice = plan_batch(state.preset.spec, state.world_size)
    return choice.micro_batch, choice.grad_accum, choice.global_batch


@dataclass
class ConfigResult:
    text: str
    world_size: int
    micro: int
    gas: int
    zero_stage: int
    offload: str  # "" or "optimizer" / "optimizer + params" offloaded to CPU
    reasons: list[str] = field(default_factory=list)
    memory_total: int | None = None  # estimated peak bytes per GPU, when memory is known
    memory_capacity: int | None = None
    memory_usable: int | None = None


def build_config_text(state: WizardState, micro: int, gas: int) -> ConfigResult:
    """The DeepSpeed JSON for the current choices: ``auto_configure`` with the same inputs
    ``ds-wizard --auto`` takes on this machine (detected GPUs and their memory)."""
    from ds_wizard.core.auto import auto_configure
    from ds_wizard.core.dsconfig import dumps
    from ds_wizard.core.fit import DEFAULT_HEADROOM, gpu_memory_from

    assert state.preset is not None
    gpu_memory = gpu_memory_from(None, state.report)
    result = auto_configure(state.preset, state.world_size, gpu_report=state.report,
                            micro_batch=micro, grad_accum=gas, gpu_memory=gpu_memory)
    zero = result.config.get("zero_optimization", {})
    offloaded = [k.removeprefix("offload_") for k in ("offload_optimizer", "offload_param")
                 if k in zero]
    out = ConfigResult(dumps(result.config), result.world_size, micro, gas,
                       int(zero.get("stage", 0)), " + ".join(offloaded), list(result.reasons))
    if gpu_memory is not None and result.memory is not None:
        out.memory_total = result.memory.total
        out.memory_capacity = gpu_memory.bytes
        out.memory_usable = gpu_memory.usable(DEFAULT_HEADROOM)
    return out


def check_saved(path: Path, world_size: int) -> tuple[bool, list[str]]:
    """Re-read the saved file and run ``check`` on it, as ``ds-wizard check`` would."""
    from ds_wizard.core.checker import check_config, load_config_file

    report = check_config(load_config_file(path), world_size)
    lines = [report.formula] if report.valid else report.errors[:2]
    return report.valid, lines


def save_current_as_preset(state: WizardState, name: str) -> Path:
    """The chosen preset, with the batch chosen on the batch step, as a user preset."""
    from ds_wizard.core.overrides import apply_overrides
    from ds_wizard.core.preset_store import derive_spec, save_user_preset

    assert state.preset is not None
    spec = derive_spec(state.preset.spec, state.preset.name)
    if state.chosen is not None and state.world_size >= 1:
        micro, gas = state.chosen
        glob = micro * gas * state.world_size
        prefix = "batch."
        if str(state.world_size) in spec.batch.by_world_size:
            prefix = f"batch.by_world_size.{state.world_size}."
        spec = apply_overrides(spec, [f"{prefix}micro_batch={micro}",
                                      f"{prefix}global_batch={glob}"])
    return save_user_preset(name, spec)
