"""The GPU step's doctor panel: ``ds-wizard doctor`` for the machine and nodes on screen.

Hidden until asked for (^d on the GPU step). The checks run in a thread worker (the kernel
import is a subprocess of seconds on a GPU machine, ssh to every host longer) and the
panel shows their ✔/✘ lines, each ✘ with its fix, when they finish.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.widgets import Static

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.runs.doctor import FAIL, INFO, OK, WARN, DoctorReport

MARKS = {OK: ("✔", "green"), INFO: ("·", "dim"), WARN: ("!", "yellow"), FAIL: ("✘", "red")}


def report_text(report: DoctorReport) -> Text:
    """The panel's content: one line per check, the fix under each ✘ and !, the verdict."""
    out = Text()
    for check in report.checks:
        mark, style = MARKS[check.status]
        out.append(f"{mark} ", style=style)
        out.append(f"{check.title}: ", style="bold")
        out.append(check.detail + "\n")
        if check.fix and check.status in (FAIL, WARN):
            out.append(f"    fix: {check.fix}\n", style=style)
    if report.can_run:
        out.append("✔ this machine can run the job", style="bold green")
    else:
        out.append(f"✘ the job cannot run here: {len(report.failures)} problem(s)",
                   style="bold red")
    return out


class DoctorPanel(Static):
    """Shows a doctor report; :meth:`check` runs one in a worker."""

    DEFAULT_CSS = """
    DoctorPanel { display: none; height: auto; border: round $primary; padding: 0 1; }
    """

    def check(self, run: Callable[[], DoctorReport]) -> None:
        """Run ``run`` (``launch.doctor.run_doctor`` with the screen's request) off the UI
        thread and show its report here."""
        self.display = True
        self.update(Text("Doctor: checking this machine…", style="italic"))

        def work() -> None:
            try:
                result: DoctorReport | str = run()
            except DsWizardError as exc:  # a preset or hostfile problem: one line, no crash
                result = exc.one_line()
            self.app.call_from_thread(self.show, result)

        self.run_worker(work, thread=True, exclusive=True, group="doctor", name="doctor",
                        exit_on_error=False)

    def show(self, result: DoctorReport | str) -> None:
        if isinstance(result, str):
            self.update(Text(f"✘ doctor: {result}", style="red"))
        else:
            self.update(report_text(result))
