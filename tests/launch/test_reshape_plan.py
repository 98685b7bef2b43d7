"""Issue 21 refusals and bookkeeping without a real run (fast lane): a prepared run with a
stand-in checkpoint, resumed on another number of ranks through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from ds_wizard.cli import main
from ds_wizard.core.runs import rundir
from ds_wizard.core.runs.runspec import Accelerator
from ds_wizard.launch import plan as planning
from ds_wizard.launch.plan import LaunchRequest

CPU = Accelerator("cpu", 0, "no GPU in this test")


def _stopped_run(runs: Path, *sets: str) -> Path:
    plan = planning.prepare_run(LaunchRequest("tiny_mamba", None, sets=sets, steps=30,
                                              runs_dir=runs, accelerator=CPU))
    tag = plan.paths.checkpoints / "global_step20"
    tag.mkdir()
    (tag / "mp_rank_00_model_states.pt").write_bytes(b"m")
    (tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"o")
    rundir.write_marker(plan.paths.checkpoints, "global_step20", 20, {"world_size": 2})
    return plan.run_dir


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file()}


def test_an_indivisible_global_batch_is_one_line_with_the_nearest_valid_ones(
        runner: CliRunner, tmp_path: Path) -> None:
    run = _stopped_run(tmp_path)
    before = _snapshot(run)
    result = runner.invoke(main, ["launch", "--resume", str(run), "--num-gpus", "3",
                                  "--runs-dir", str(tmp_path)])
    assert result.exit_code == 1
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert lines == [
        "error: global batch 16 cannot be split over 3 data-parallel rank(s); nearest valid "
        "global batches: 15 or 18 (pass --global-batch N to train with one (the LR schedule "
        "stays as it was), or choose another number of ranks)"], result.output
    assert _snapshot(run) == before  # nothing written, nothing converted


def test_global_batch_takes_one_and_the_summary_says_it_changed(
        runner: CliRunner, tmp_path: Path) -> None:
    run = _stopped_run(tmp_path)
    result = runner.invoke(main, ["launch", "--resume", str(run), "--num-gpus", "3",
                                  "--global-batch", "18", "--dry-run",
                                  "--runs-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "global batch 16 → 18 (asked with --global-batch; the LR schedule stays as it " \
           "was), split 18 = 3 × 2 × 3" in result.output
    assert "would convert global_step20 with ds_to_universal" in result.output
    assert json.loads((run / "run.json").read_text())["world_size"] == 2  # a dry run


def test_a_conversion_deepspeed_cannot_do_is_named_before_anything_starts(
        runner: CliRunner, tmp_path: Path) -> None:
    run = _stopped_run(tmp_path)
    cfg = json.loads((run / "ds_config.json").read_text())
    cfg["zero_optimization"]["offload_optimizer"] = {"device": "nvme",
                                                     "nvme_path": str(tmp_path)}
    (run / "ds_config.json").write_text(json.dumps(cfg))
    before = _snapshot(run)
    result = runner.invoke(main, ["launch", "--resume", str(run), "--num-gpus", "1",
                                  "--runs-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.startswith("error: ZeRO-2 with optimizer offload to nvme: "
                                    "DeepSpeed's universal checkpoint cannot carry "
                                    "NVMe-offloaded state to 1 rank(s)"), result.output
    assert len(result.output.strip().splitlines()) == 1
    assert _snapshot(run) == before


def test_zero0_in_fp32_needs_no_conversion(runner: CliRunner, tmp_path: Path) -> None:
    run = _stopped_run(tmp_path, "deepspeed.zero_stage=0")
    result = runner.invoke(main, ["launch", "--resume", str(run), "--num-gpus", "1",
                                  "--dry-run", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "ZeRO-0 keeps whole model and optimizer copies" in result.output
    assert "ds_to_universal before starting" not in result.output


def test_checkpoint_verify_names_a_damaged_tag(runner: CliRunner, tmp_path: Path) -> None:
    run = _stopped_run(tmp_path)
    ok = runner.invoke(main, ["checkpoint", "verify", str(run)])
    assert ok.exit_code == 0 and "global_step20 (2 ranks): intact" in ok.output
    (run / "checkpoints" / "global_step20" / "mp_rank_00_model_states.pt").write_bytes(b"x")
    bad = runner.invoke(main, ["checkpoint", "verify", str(run), "--json"])
    assert bad.exit_code == 1
    (tag,) = json.loads(bad.output)["tags"]
    assert tag["status"] == "damaged" and "SHA-256" in tag["problems"][0]
