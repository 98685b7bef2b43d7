"""``ds-wizard gpus``: what NVML sees, as CUDA will number it."""

from __future__ import annotations

import click

from ds_wizard.core.base.text import json_text
from ds_wizard.core.plan.gpus import GpuInventory, detect_gpus


@click.command("gpus")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def gpus(as_json: bool) -> None:
    """List the NVIDIA GPUs: name, memory, compute capability and bf16 support.

    Respects CUDA_VISIBLE_DEVICES. No GPU or no driver is not an error: it says
    so and exits 0.

    \b
    Examples:
      ds-wizard gpus
      CUDA_VISIBLE_DEVICES=0,1 ds-wizard gpus --json
    """
    report = detect_gpus()
    if as_json:
        click.echo(json_text(report.to_dict()))
        return
    for line in render_gpus(report):
        click.echo(line)


def render_gpus(report: GpuInventory) -> list[str]:
    skipped = [f"  skipped {s}" for s in report.skipped]
    if not report.gpus:
        return [
            f"No NVIDIA GPU found: {report.reason}.",
            *skipped,
            "Configs for another machine still work: pass --num-gpus N to --auto, check and fix.",
        ]
    head = f"{report.count} GPU(s) visible"
    if report.driver_version:
        head += f", driver {report.driver_version}"
    if report.cuda_visible_devices is not None:
        head += f", CUDA_VISIBLE_DEVICES={report.cuda_visible_devices}"
    lines = [head]
    for g in report.gpus:
        cc = f"{g.compute_capability[0]}.{g.compute_capability[1]}"
        lines.append(f"  [{g.index}] {g.name}  {g.memory_total / 2**30:.1f} GiB  "
                     f"compute {cc}  bf16 {'yes' if g.bf16 else 'no'}"
                     + (f"  MIG {g.uuid}" if g.mig else ""))
    lines += skipped
    lines += [f"note: {n}" for n in report.notes]
    if report.mig and report.count > 1:
        lines.append("note: a CUDA process sees one MIG instance; pick one with "
                     "CUDA_VISIBLE_DEVICES=MIG-… to train on it")
    return lines
