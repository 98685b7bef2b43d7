"""``ds-wizard doctor``: can this machine (and every node) run the planned job?"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ds_wizard.commands.common import preset_options, resolve_preset
from ds_wizard.commands.numbers import Count, FiniteFloat
from ds_wizard.core.base.defaults import RUNS_DIR
from ds_wizard.core.base.errors import ExitCode
from ds_wizard.core.base.limits import MAX_WORLD_SIZE
from ds_wizard.core.base.text import json_text
from ds_wizard.core.plan.backends import BACKENDS, DEFAULT_BACKEND
from ds_wizard.core.runs.doctor import FAIL, INFO, OK, WARN, DoctorReport

# the CPU demo preset: the default preset (7b_mamba) cannot run on CPU ranks
CPU_PRESET = "tiny_mamba"
MARKS = {OK: ("✔", "green"), INFO: ("·", "dim"), WARN: ("!", "yellow"), FAIL: ("✘", "red")}


@click.command("doctor")
@preset_options()
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              metavar="FILE", help="Check for this DeepSpeed JSON (as `launch --config`).")
@click.option("--num-gpus", type=Count(MAX_WORLD_SIZE), default=None,
              help="Ranks the job will use (default: every visible GPU; 2 CPU ranks "
                   "without a GPU).")
@click.option("--hostfile", type=click.Path(path_type=Path, dir_okay=False), default=None,
              metavar="FILE", help="Also check every host of this DeepSpeed hostfile over "
                                   "ssh (reachable, same versions, GPUs vs slots).")
@click.option("--master-addr", default=None, metavar="ADDR",
              help="With --hostfile: the address the nodes must reach (default: the "
                   "first host).")
@click.option("--backend", type=click.Choice(BACKENDS), default=DEFAULT_BACKEND,
              show_default=True)
@click.option("--runs-dir", default=RUNS_DIR, show_default=True, metavar="DIR",
              help="Where checkpoints will be written (its free space is checked).")
@click.option("--collectives", is_flag=True,
              help="Also all-reduce over this node's ranks (gloo on CPU, NCCL on GPUs) and "
                   "report bus bandwidth and latency; bounded by --collective-timeout.")
@click.option("--collective-timeout", type=FiniteFloat(1, 600), default=20.0,
              show_default=True, metavar="SECONDS",
              help="How long a rank may take to join the collective test.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--report", "report_path", type=click.Path(path_type=Path, dir_okay=False),
              default=None, metavar="FILE",
              help="Write a Markdown report to paste into an issue (versions, plan, "
                   "failures; no environment variables).")
@click.pass_context
def doctor(ctx: click.Context, preset_ref: str | None, sets: tuple[str, ...],
           config_path: Path | None, num_gpus: int | None, hostfile: Path | None,
           master_addr: str | None, backend: str, runs_dir: str, collectives: bool,
           collective_timeout: float, as_json: bool, report_path: Path | None) -> None:
    """Say whether this machine can run the planned job, and for each "no" the one fix.

    Checks versions, the Mamba kernels (imported in a fresh interpreter exactly as a rank
    imports them: the backend a rank will run), the DeepSpeed ops the config will compile
    and whether they can be built here, host RAM against the plan, /dev/shm, free disk
    for a checkpoint, open-file and process limits; with --hostfile every host over ssh;
    with --collectives an all-reduce over the ranks.

    Without --preset: the default preset on a GPU machine, tiny_mamba (the CPU demo)
    without a GPU. Exit status 0 when the job can run, 1 when it cannot.

    \b
    Examples:
      ds-wizard doctor
      ds-wizard doctor --preset mamba_1.4b --num-gpus 8 --report doctor.md
      ds-wizard doctor --hostfile hosts --json
    """
    from ds_wizard.core.base.fsio import atomic_write_text
    from ds_wizard.core.plan.gpus import detect_gpus
    from ds_wizard.core.presets.lookup import DEFAULT_PRESET
    from ds_wizard.launch.doctor import DoctorRequest, run_doctor
    from ds_wizard.launch.plan import LaunchRequest

    gpus = detect_gpus()
    if preset_ref is None:
        preset_ref = DEFAULT_PRESET if gpus.count else CPU_PRESET
    preset = resolve_preset(preset_ref, sets)
    report = run_doctor(DoctorRequest(
        LaunchRequest(preset, num_gpus, config_path=config_path, runs_dir=runs_dir,
                      backend=backend, hostfile=hostfile, gpu_report=gpus),
        master_addr=master_addr, collectives=collectives,
        collective_timeout=collective_timeout))
    if report_path is not None:
        atomic_write_text(report_path, report.markdown(home=str(Path.home())))
    if as_json:
        click.echo(json_text(report.to_dict()))
    else:
        render(report)
        if report_path is not None:
            click.echo(f"report written to {report_path}")
    ctx.exit(ExitCode.OK if report.can_run else ExitCode.PROBLEM)


def render(report: DoctorReport) -> None:
    """✔/✘ per check, with its fix under each ✘ and !."""
    from rich.console import Console
    from rich.text import Text

    console = Console(file=sys.stdout, highlight=False, soft_wrap=True)
    for check in report.checks:
        mark, style = MARKS[check.status]
        line = Text(f"{mark} ", style=style)
        line.append(f"{check.title}: ", style="bold")
        line.append(check.detail)
        console.print(line)
        if check.fix and check.status in (FAIL, WARN):
            console.print(Text(f"    fix: {check.fix}", style=style))
    verdict = (Text("✔ this machine can run the job", style="bold green") if report.can_run
               else Text(f"✘ the job cannot run here: {len(report.failures)} problem(s)",
                         style="bold red"))
    console.print(verdict)
