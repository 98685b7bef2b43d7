"""Export an SVG screenshot of each wizard step into docs/screenshots/ (for the README).

    .venv/bin/python docs/make_screenshots.py

Fake GPUs (4 × H200) and a fake training job keep the pictures the same on every machine.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_tui_fakes import fake_gpus, no_gpus, script_job_factory, wait_for  # noqa: E402

from ds_wizard.app import make_app  # noqa: E402

OUT = ROOT / "docs" / "screenshots"
SIZE = (100, 30)


async def shoot(app, name: str, steps: list) -> None:
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
        app.save_screenshot(str(OUT / f"{name}.svg"))
        print(f"wrote docs/screenshots/{name}.svg")


async def wait_job(pilot) -> None:
    screen = pilot.app.screen
    await wait_for(pilot, lambda: screen.job is not None and not screen.running)


async def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        os.environ["DS_WIZARD_CONFIG_DIR"] = str(Path(tmp) / "config")
        os.environ.pop("DS_WIZARD_PRESET_PATH", None)
        await shoot(make_app(fake_gpus(4), cursor_blink=False), "1-gpus", [])
        await shoot(make_app(no_gpus, cursor_blink=False), "1-gpus-none", [])
        await shoot(make_app(fake_gpus(4), cursor_blink=False), "2-preset", ["ctrl+n"])
        await shoot(make_app(fake_gpus(4), cursor_blink=False), "3-batch",
                    ["ctrl+n", "ctrl+n"])
        await shoot(make_app(fake_gpus(4), cursor_blink=False), "3-batch-error",
                    ["ctrl+n", "ctrl+n", "ctrl+g", "ctrl+g", "ctrl+g", "tab", "tab", "end",
                     "ctrl+u", "1", "6"])
        await shoot(make_app(fake_gpus(4), cursor_blink=False), "4-review",
                    ["ctrl+n", "ctrl+n", "ctrl+n", "ctrl+s"])
        factory = script_job_factory(Path(tmp), steps=24)
        await shoot(make_app(fake_gpus(4), job_factory=factory, cursor_blink=False),
                    "5-launch", ["ctrl+n", "ctrl+n", "ctrl+n", "ctrl+s", "ctrl+n", "ctrl+l",
                                 wait_job])


if __name__ == "__main__":
    asyncio.run(main())
