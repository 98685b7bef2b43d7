"""Export an SVG screenshot of each wizard step into docs/screenshots/ (see docs/tui.md).

    .venv/bin/python docs/make_screenshots.py [--out DIR]

It imports only the installed ``ds_wizard`` package and the standard library (no test
helpers, no ``sys.path`` changes), so it runs from any directory. Fake GPUs (4 × H200)
and a scripted training job, both defined here, keep the pictures the same on every
machine; they go in through ``make_app(...)``, the same door the CLI and the tests use.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ds_wizard.app import make_app
from ds_wizard.core.plan.gpus import GpuInfo, GpuInventory

DEFAULT_OUT = Path(__file__).resolve().parent / "screenshots"
SIZE = (100, 30)
STEPS = 24  # training steps the scripted job logs


def fake_gpus(count: int = 4, name: str = "NVIDIA H200", memory_mib: int = 143771):
    """A GPU probe returning what NVML reports for ``count`` H200s (compute capability 9.0)."""

    def probe() -> GpuInventory:
        gpus = [GpuInfo(i, i, name, memory_mib * 2**20, (9, 0), f"GPU-fake-{i}")
                for i in range(count)]
        return GpuInventory(gpus, "550.54.15", None, None)

    return probe


def no_gpus() -> GpuInventory:
    return GpuInventory([], None, "no NVIDIA driver or GPU found (NVML: Driver Not Loaded)", None)


class ScriptedJob:
    """A finished-in-a-moment training job with the launch screen's ``Job`` interface.

    It prints what a trainer prints and appends one metrics record per step to
    ``run_dir/metrics.jsonl``, so the screen shows real log lines, status and loss plot.
    """

    def __init__(self, run_dir: Path, steps: int) -> None:
        self.pid = os.getpid()
        self.command = f"scripted job ({steps} steps)"
        self.run_dir = run_dir
        self._steps = steps
        self._stopped = threading.Event()

    def lines(self) -> Iterator[str]:
        yield "[fake] starting"
        with open(self.run_dir / "metrics.jsonl", "a") as metrics:
            for step in range(1, self._steps + 1):
                if self._stopped.is_set():
                    return
                loss = 5.0 / step
                yield f"step {step} loss {loss:.4f}"
                metrics.write(json.dumps({"step": step, "loss": loss,
                                          "tokens_per_s": 1000.0 * step,
                                          "elapsed_s": float(step)}) + "\n")
                metrics.flush()
                # a trainer's pace: the launch screen's log pane stops following its end
                # when many lines arrive within one 0.1 s refresh (see docs/tui.md)
                time.sleep(0.05)
        yield "[fake] done"

    def stop(self) -> int | None:
        self._stopped.set()
        return None

    def wait(self) -> int:
        return 130 if self._stopped.is_set() else 0


def scripted_jobs(tmp: Path):
    """The launch screen's job factory: each start gets its own run directory."""
    count = 0

    def factory(state) -> ScriptedJob:
        nonlocal count
        run_dir = tmp / f"run{count}"
        run_dir.mkdir()
        count += 1
        return ScriptedJob(run_dir, STEPS)

    return factory


async def wait_for(pilot, condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the wizard did not get there within {timeout:.0f} s")
        await pilot.pause(0.1)


async def wait_job(pilot) -> None:
    screen = pilot.app.screen
    await wait_for(pilot, lambda: screen.job is not None and not screen.running)


async def shoot(app, out: Path, name: str, steps: list) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        for step in steps:
            if callable(step):
                await step(pilot)
            else:
                await pilot.press(step)
                await pilot.pause()
        await pilot.pause(0.3)
        app.clear_notifications()
        await pilot.pause()
        app.save_screenshot(str(out / f"{name}.svg"))
        print(f"wrote {out / name}.svg")


async def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        # only the built-in presets, whatever this machine has in ./presets or its config
        os.chdir(tmp)
        os.environ["DS_WIZARD_CONFIG_DIR"] = str(tmp / "config")
        os.environ.pop("DS_WIZARD_PRESET_PATH", None)
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        gpus = fake_gpus(4)
        await shoot(make_app(gpus, cursor_blink=False), out, "1-gpus", [])
        await shoot(make_app(no_gpus, cursor_blink=False), out, "1-gpus-none", [])
        await shoot(make_app(gpus, cursor_blink=False), out, "2-preset", ["ctrl+n"])
        await shoot(make_app(gpus, cursor_blink=False), out, "3-batch", ["ctrl+n", "ctrl+n"])
        await shoot(make_app(gpus, cursor_blink=False), out, "3-batch-error",
                    ["ctrl+n", "ctrl+n", "ctrl+g", "ctrl+g", "ctrl+g", "tab", "tab", "end",
                     "ctrl+u", "1", "6"])
        await shoot(make_app(gpus, cursor_blink=False), out, "4-review",
                    ["ctrl+n", "ctrl+n", "ctrl+n", "ctrl+s"])
        await shoot(make_app(gpus, job_factory=scripted_jobs(tmp), cursor_blink=False), out,
                    "5-launch", ["ctrl+n", "ctrl+n", "ctrl+n", "ctrl+s", "ctrl+n", "ctrl+l",
                                 wait_job])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="directory for the SVG files (default: docs/screenshots)")
    args = parser.parse_args()
    asyncio.run(main(args.out.resolve()))
