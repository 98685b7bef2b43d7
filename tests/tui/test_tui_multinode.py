"""The wizard with several nodes: the hostfile field, and launching or writing scripts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import Input, Static
from tui_pilot import settle, text_of, to_launch, type_into, wizard

from ds_wizard.core.config.auto import auto_configure
from ds_wizard.core.config.dsconfig import dumps
from ds_wizard.core.plan.gpus import GpuInfo, GpuInventory
from ds_wizard.core.presets.lookup import load_preset
from ds_wizard.launch import client
from ds_wizard.launch.command import HOSTFILE_NAME
from ds_wizard.screens.jobs import ScriptsOnlyJob, launcher_job
from ds_wizard.screens.state import WizardState, headless_command

FOUR_GPUS = GpuInventory([GpuInfo(i, i, "NVIDIA A100-SXM4-80GB", 80 * 2**30, (8, 0), f"GPU-{i}")
                       for i in range(4)], driver_version="550.54")


@pytest.mark.anyio
async def test_hostfile_field_sets_the_world_size(work: Path) -> None:
    (work / "hosts").write_text("a slots=4\nb slots=4\nc slots=4\n")
    (work / "bad").write_text("a slots=4\nb four\n")
    app = wizard()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await type_into(pilot, "#hostfile", "hosts")
        await pilot.pause()
        assert app.state.world_size == 12
        summary = text_of(app, "#gpu-summary")
        assert "world size: 12" in summary and "3 nodes × 4 GPUs" in summary
        assert app.screen.query_one("#nodes", Input).disabled  # the hostfile's hosts decide
        await pilot.press("ctrl+u", *list("bad"))
        await pilot.pause()
        summary = text_of(app, "#gpu-summary")
        assert "line 2" in summary and app.state.world_size == 0
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.screen.step == "gpus"  # a bad hostfile stops Next


def _state(work: Path, hostfile: str) -> WizardState:
    preset = load_preset("tiny_mamba")
    state = WizardState(report=FOUR_GPUS, preset=preset, preset_ref="tiny_mamba",
                        hostfile=hostfile, runs_dir=work / "runs")
    saved = work / "ds_config.json"
    saved.write_text(dumps(auto_configure(preset, state.world_size).config))
    state.saved_path = saved
    return state


def test_not_on_the_head_node_the_scripts_are_written(work: Path) -> None:
    (work / "hosts").write_text("head-elsewhere slots=4\nworker slots=4\n")
    state = _state(work, "hosts")
    assert "--hostfile hosts" in headless_command(state, 1, 1)
    job = launcher_job(state)
    assert isinstance(job, ScriptsOnlyJob) and job.run_dir is not None
    script = (job.run_dir / "launch_deepspeed.sh").read_text()
    assert f"--hostfile={job.run_dir.resolve() / HOSTFILE_NAME}" in script
    assert any("run it on the head node (head-elsewhere)" in line for line in job.lines())
    assert job.wait() == 0


def test_on_the_head_node_the_job_starts(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (work / "hosts").write_text("localhost slots=4\nworker slots=4\n")
    started = []
    class Started:
        pid, log_offset = 4242, 0

    monkeypatch.setattr(client, "start_supervisor",
                        lambda plan, detach: started.append(plan) or Started())
    job = launcher_job(_state(work, "hosts"))
    assert job.pid == 4242 and job.run_dir is not None
    (plan,) = started
    assert plan.run.world_size == 8 and plan.run.nodes == 2
    assert any(c.startswith("--hostfile=") for c in plan.command)


def test_nodes_without_a_hostfile_get_an_sbatch_script(work: Path) -> None:
    state = _state(work, "")
    state.nodes = 2
    saved = work / "ds_config.json"
    saved.write_text(dumps(auto_configure(state.preset, state.world_size).config))
    job = launcher_job(state)
    assert isinstance(job, ScriptsOnlyJob) and job.command.startswith("sbatch ")
    assert job.run_dir is not None and (job.run_dir / "launch_slurm.sbatch").is_file()


@pytest.mark.anyio
async def test_wizard_writes_the_scripts_when_not_on_the_head_node(work: Path) -> None:
    """GPU step with a hostfile → … → ^l: not the head node, so the scripts are written."""
    (work / "hosts").write_text("head-elsewhere slots=4\nworker slots=4\n")
    app = wizard()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await type_into(pilot, "#hostfile", "hosts")
        await to_launch(pilot)
        await pilot.press("ctrl+l")
        screen = app.screen

        def result() -> str:
            return str(screen.query_one("#launch-result", Static).render())

        for _ in range(300):
            if "scripts written" in result():
                break
            await pilot.pause(0.1)
        assert "nothing started here: bash " in result() and "launch_deepspeed.sh" in result()
        run_dir = next((work / "runs").iterdir())
        saved = json.loads((work / "ds_config.json").read_text())
        assert saved["train_batch_size"] % 8 == 0  # planned for 2 nodes × 4 GPUs
        assert (run_dir / HOSTFILE_NAME).read_text().splitlines()[1:] == [
            "head-elsewhere slots=4", "worker slots=4"]
