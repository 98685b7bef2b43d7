"""The batch step's Measure key (with a stand-in for the short runs) and the other
machine's GPU picker on the GPU step."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from fakes import no_gpus
from textual.widgets import Input, OptionList, Select, Static

from ds_wizard.app import make_app
from ds_wizard.core.plan import tune as core
from ds_wizard.core.plan.memory import GiB, Strategy
from ds_wizard.launch.tune import TuneEvent, TuneRequest

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("work")]


def text_of(app, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def settle(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


class StandIn:
    """run_tune's shape: candidates at the request's global batch, micro 8 out of memory,
    micro 2 the fastest (by too little to try 1); progress reported as the real runner does."""

    def __init__(self) -> None:
        self.requests: list[TuneRequest] = []

    def __call__(self, req: TuneRequest, progress, stop: threading.Event) -> core.TuneResult:
        self.requests.append(req)
        glob = req.global_batch or 16
        ws = req.num_gpus or 2
        speed = {1: 300.0, 2: 405.0, 4: 400.0}  # 2 wins, but not by enough to go on
        count = 0

        def measure(c: core.Candidate) -> core.Measurement:
            nonlocal count
            count += 1
            progress(TuneEvent("step", f"candidate {count}: step 2/4", count, 5, 2, 4,
                               float(count), 60.0))
            if c.micro_batch >= 8:
                return core.Measurement(c, core.OOM, GiB, note="out of memory: MemoryError")
            peak = GiB // 2 + c.micro_batch * 2**24
            return core.Measurement(c, core.FITS, GiB, peak, (peak, peak),
                                    speed[c.micro_batch], 3)

        found = core.search(core.candidates(glob, ws, [Strategy(2)]), 4, measure)
        return core.TuneResult("tiny_mamba", ws, glob, "cpu", "test CPU", 8 * GiB, "test",
                               0.9, 4, tuple(found), core.choose(found))


async def test_measure_fills_the_fields_with_the_choice_and_marks_the_splits() -> None:
    app = make_app(no_gpus, cursor_blink=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+t")  # the CPU demo: tiny_mamba on 2 CPU ranks, here
        await pilot.press("ctrl+n")
        await settle(pilot)
        await pilot.press("ctrl+n")
        await settle(pilot)
        screen = app.screen
        assert screen.step == "batch"
        assert app.state.micro_text == "4"  # the preset's own choice
        fake = StandIn()
        screen.measure_runner = fake
        await pilot.press("ctrl+t")
        await settle(pilot)
        assert fake.requests and fake.requests[0].global_batch == 16
        assert fake.requests[0].output is None  # the wizard saves on its review step
        assert (app.state.micro_text, app.state.gas_text, app.state.global_text) == \
            ("2", "4", "16")
        assert screen.query_one("#micro", Input).value == "2"
        assert "fastest that fits" in text_of(app, "#measure")
        pairs = screen.query_one("#pairs", OptionList)
        shown = [str(pairs.get_option_at_index(i).prompt) for i in range(pairs.option_count)]
        assert any(s.startswith("● 2 × 4 × 2") and "⏱ 405 tok/s" in s for s in shown), shown
        assert any(s.strip().startswith("8 × 1 × 2") and "does not fit" in s for s in shown)
        assert any("1 × 8 × 2" in s and "⏱" not in s for s in shown)  # not measured


async def test_measure_again_stops_it() -> None:
    started = threading.Event()

    def slow(req, progress, stop):
        started.set()
        deadline = time.monotonic() + 10
        while not stop.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stop.is_set()
        return core.TuneResult("tiny_mamba", 2, 16, "cpu", "x", None, "", 0.9, 4, (), None,
                               interrupted=True)

    app = make_app(no_gpus, cursor_blink=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+t", "ctrl+n")
        await settle(pilot)
        await pilot.press("ctrl+n")
        await settle(pilot)
        app.screen.measure_runner = slow
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert started.wait(5)
        assert app.screen.ready() is not None  # no going on while it measures
        await pilot.press("ctrl+t")
        await settle(pilot)
        assert "nothing fitted" in text_of(app, "#measure")
        assert app.state.micro_text == "4"


async def test_picking_an_80gb_gpu_turns_not_checked_into_a_fit_verdict(work: Path) -> None:
    app = make_app(no_gpus, cursor_blink=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        assert not screen.query_one("#other-gpu-row").display  # only when planning elsewhere
        await pilot.press("end", "ctrl+u", "4")  # 4 GPUs on a machine with none
        await pilot.pause()
        assert app.state.planning_elsewhere
        assert screen.query_one("#other-gpu-row").display
        await pilot.press("ctrl+n")
        await settle(pilot)
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert "not checked" in text_of(app, "#memory")
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("escape")
        await settle(pilot)
        assert app.screen.step == "gpus"
        select = app.screen.query_one("#other-gpu", Select)
        select.focus()
        await pilot.press("enter")  # open the list
        await pilot.pause()
        for _ in range(3):  # the prompt, B200, H200, then H100 80GB
            await pilot.press("down")
        await pilot.press("enter")
        await settle(pilot)
        assert select.value == "NVIDIA H100 80GB HBM3"
        assert app.state.other_gpu == "NVIDIA H100 80GB HBM3"
        assert "79.6 GiB per GPU" in text_of(app, "#gpu-summary")
        await pilot.press("ctrl+n")
        await settle(pilot)
        await pilot.press("ctrl+n")
        await settle(pilot)
        memory = text_of(app, "#memory")
        assert "not checked" not in memory
        assert "of 79.6 GiB" in memory


async def test_a_typed_memory_size_is_checked_too() -> None:
    app = make_app(no_gpus, cursor_blink=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("end", "ctrl+u", "4")
        await pilot.pause()
        typed = app.screen.query_one("#other-memory", Input)
        typed.focus()
        await pilot.press(*"24Q")
        await pilot.pause()
        assert "its memory: cannot read" in text_of(app, "#gpu-summary")
        await pilot.press("backspace", "G")
        await pilot.pause()
        assert app.state.other_gpu == "24G"
        assert "24.0 GiB per GPU" in text_of(app, "#gpu-summary")


async def test_the_memory_line_says_measured_here_when_tune_ran_this_split(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ds_wizard.core.plan.measured import ENV_DATA_DIR, add, this_machine
    from ds_wizard.core.presets.lookup import load_preset

    monkeypatch.setenv(ENV_DATA_DIR, str(tmp_path / "data"))
    cand = core.Candidate(4, 2, 2, Strategy(2))
    m = core.Measurement(cand, core.FITS, GiB, int(0.98 * GiB), (int(0.98 * GiB),), 200.0, 3)
    result = core.TuneResult("tiny_mamba", 2, 16, "cpu", "x", 8 * GiB, "", 0.9, 4, (m,), m)
    data = {k: v for k, v in result.to_dict().items() if k not in ("config", "notes",
                                                                     "machine")}
    add(data, load_preset("tiny_mamba").spec, this_machine(no_gpus()))
    app = make_app(no_gpus, cursor_blink=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+t", "ctrl+n")
        await settle(pilot)
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert "measured here 0.98 GiB peak (fits)" in text_of(app, "#memory")
