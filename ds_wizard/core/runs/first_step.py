"""Elapsed time while a launch waits for its first training step.

Start-up (process spawn, imports, a first-run op build, model and data) can take minutes
with no output. ``FirstStepWatch`` prints a line with the elapsed time whenever the job has
been quiet for ``every_s`` seconds, until the first step (or the end of the job).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

from ds_wizard.core.runs.jit_ops import clock

# the trainer's step line: "step      1/40  loss …"
FIRST_STEP = re.compile(r"^\s*step\s+\d+/\d+")


class FirstStepWatch:
    """Feed it every output line; it reports the wait through ``say`` from a thread."""

    def __init__(self, say: Callable[[str], None], *, every_s: float = 20.0,
                 what: str = "starting the ranks") -> None:
        self.say = say
        self.every_s = every_s
        self.what = what
        self.began = time.monotonic()
        self._quiet_since = self.began
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="first-step")

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.began

    def start(self) -> FirstStepWatch:
        self._thread.start()
        return self

    def line(self, text: str) -> None:
        self._quiet_since = time.monotonic()
        if FIRST_STEP.match(text):
            self._done.set()

    def stop(self) -> None:
        self._done.set()

    def _run(self) -> None:
        while not self._done.wait(1.0):
            if time.monotonic() - self._quiet_since >= self.every_s:
                self._quiet_since = time.monotonic()
                self.say(f"⏳ {clock(self.elapsed)} since launch, no training step yet "
                         f"({self.what})")
