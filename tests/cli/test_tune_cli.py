"""``ds-wizard tune`` end to end with a stand-in for the short runs (the real runs are in
tests/launch/test_tune_real.py): the table, the written config, the machine record that
`plan`, `--auto` and `launch` then use, and `--save-preset`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import NO_GPU, patch_gpus

from ds_wizard.cli import main
from ds_wizard.core.check.checker import check_config, load_config_file
from ds_wizard.core.plan import tune as core
from ds_wizard.core.plan.measured import ENV_DATA_DIR, record_path
from ds_wizard.core.plan.memory import GiB
from ds_wizard.launch import tune as tune_run

OOM_ABOVE = 4  # the stand-in runs out of memory above micro-batch 4


def stand_in(self: tune_run._Runner, cand: core.Candidate) -> core.Measurement:
    """Like a real run on two CPU ranks: peak grows with the micro-batch; micro 2 is the
    fastest; above OOM_ABOVE a rank runs out of memory."""
    self.count += 1
    predicted = self.setup.predict(tune_run.candidate_config(self.setup, cand))
    if cand.micro_batch > OOM_ABOVE:
        return core.Measurement(cand, core.OOM, predicted,
                                note="out of memory: MemoryError")
    peak = int(0.9 * GiB) + cand.micro_batch * 16 * 2**20
    tps = {1: 300.0, 2: 420.0, 4: 400.0}.get(cand.micro_batch, 100.0)
    status = core.verdict(True, False, peak, self.setup.limit)
    return core.Measurement(cand, status, predicted, peak, (peak, peak - 2**20), tps, 3)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(ENV_DATA_DIR, str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture
def tuned(work: Path, data_dir: Path, runner: object, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(runner_module(), "__call__", stand_in)
    res = runner.invoke(main, ["tune", "--preset", "tiny_mamba", "--num-gpus", "2",
                               "--global-batch", "32", "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def runner_module() -> type:
    return tune_run._Runner


def test_tune_measures_candidates_at_one_global_batch_and_writes_a_checked_config(
        tuned: dict, work: Path) -> None:
    cands = tuned["candidates"]
    assert len(cands) >= 3
    assert {c["global_batch"] for c in cands} == {32}
    assert all(c["micro_batch"] * c["grad_accum"] * 2 == 32 for c in cands)
    assert cands[0]["micro_batch"] == 4  # the plan's choice comes first
    oom = [c for c in cands if c["micro_batch"] > OOM_ABOVE]
    assert oom and all(c["status"] == "does not fit" and not c["fits"] for c in oom)
    for c in cands:
        assert c["predicted_peak_bytes"] > 0
        if c["fits"]:
            assert c["measured_peak_bytes"] and c["tokens_per_s"] and c["error_pct"] is not None
    assert tuned["chosen"]["micro_batch"] == 2  # the fastest that fits, below the OOM
    cfg = load_config_file(work / "deepspeed_config.json")
    assert (cfg["train_batch_size"], cfg["train_micro_batch_size_per_gpu"],
            cfg["gradient_accumulation_steps"]) == (32, 2, 8)
    assert check_config(cfg, 2).valid
    assert record_path().is_file()


def test_check_accepts_the_written_config(tuned: dict, runner) -> None:
    res = runner.invoke(main, ["check", "deepspeed_config.json", "--num-gpus", "2"])
    assert res.exit_code == 0, res.output


def test_plan_and_auto_show_the_measurement_and_use_it(tuned: dict, runner) -> None:
    res = runner.invoke(main, ["--auto", "--num-gpus", "2", "--preset", "tiny_mamba",
                               "--global-batch", "32", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "measured here" in res.output
    assert "32 = 2 × 8 × 2" in res.output
    assert "measured peak is used for the fit" in res.output
    # the preset's own global batch (16) was not tuned: the measurement is shown, not used
    res = runner.invoke(main, ["--auto", "--num-gpus", "2", "--preset", "tiny_mamba",
                               "--dry-run"])
    assert res.exit_code == 0 and "16 = 4 × 2 × 2" in res.output


def test_plan_uses_the_measured_peak_on_a_machine_without_gpus(work: Path, data_dir: Path,
                                                                runner, monkeypatch) -> None:
    monkeypatch.setattr(runner_module(), "__call__", stand_in)
    res = runner.invoke(main, ["tune", "--preset", "tiny_mamba", "--num-gpus", "2",
                               "--json"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["plan", "--preset", "tiny_mamba", "--num-gpus", "2"])
    assert res.exit_code == 0, res.output
    assert "measured here" in res.output and "used for the fit" in res.output
    res = runner.invoke(main, ["--auto", "--num-gpus", "2", "--preset", "tiny_mamba",
                               "--json", "--dry-run"])
    data = json.loads(res.stdout)
    assert data["measured_here"].startswith("measured here")
    assert data["train_micro_batch_size_per_gpu"] == 2  # the tune's choice at 16
    from ds_wizard.launch.plan import LaunchRequest, prepare_run

    patch_gpus(monkeypatch, NO_GPU)
    plan = prepare_run(LaunchRequest("tiny_mamba", 2, dry_run=True, steps=2))
    assert any(n.startswith("measured here") for n in plan.notes)


def test_record_is_isolated_and_a_damaged_one_never_stops_a_plan(work: Path, data_dir: Path,
                                                                  runner) -> None:
    data_dir.mkdir(parents=True)
    (data_dir / "measured.json").write_text("{not json", encoding="utf-8")
    res = runner.invoke(main, ["--auto", "--num-gpus", "2", "--preset", "tiny_mamba",
                               "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "measured here" not in res.output


def test_save_preset_pins_the_choice_and_auto_reproduces_it(work: Path, data_dir: Path,
                                                            runner, monkeypatch) -> None:
    monkeypatch.setattr(runner_module(), "__call__", stand_in)
    monkeypatch.setenv(ENV_DATA_DIR, str(work / "elsewhere"))  # --auto must use the preset
    res = runner.invoke(main, ["tune", "--preset", "tiny_mamba", "--num-gpus", "2",
                               "--global-batch", "32", "--save-preset", "tiny_tuned"])
    assert res.exit_code == 0, res.output
    assert "preset saved" in res.output
    saved = Path(res.output.split("preset saved: ")[1].split()[0])
    text = saved.read_text(encoding="utf-8")
    block = text.split("[batch.by_world_size.2]")
    assert "# measured by `ds-wizard tune`" in block[0].splitlines()[-3] + block[0]
    assert "micro_batch = 2" in block[1] and "global_batch = 32" in block[1]
    res = runner.invoke(main, ["presets", "validate", "--strict", str(saved)])
    assert res.exit_code == 0, res.output
    monkeypatch.setenv(ENV_DATA_DIR, str(work / "empty"))  # no record: the preset alone
    res = runner.invoke(main, ["--auto", "--num-gpus", "2", "--preset", "tiny_tuned",
                               "--dry-run"])
    assert res.exit_code == 0 and "32 = 2 × 8 × 2" in res.output, res.output


def test_bad_input_is_one_line(work: Path, data_dir: Path, runner) -> None:
    res = runner.invoke(main, ["tune", "--preset", "tiny_mamba", "--num-gpus", "3",
                               "--global-batch", "16"])
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1].startswith("error: global batch 16 cannot "
                                                          "be split over 3")
    res = runner.invoke(main, ["tune", "--stages", "5"])
    assert res.exit_code == 2 and "stages are 0, 1, 2 or 3" in res.output


def test_ctrl_c_keeps_what_was_measured(work: Path, data_dir: Path, runner,
                                        monkeypatch) -> None:
    """The stop (what Ctrl-C sets) ends the search after the current candidate, whose
    partial figures are kept; the exit status says it was stopped."""

    def stopped_second(self: tune_run._Runner, cand: core.Candidate) -> core.Measurement:
        if self.count == 1:
            self.stop.set()  # Ctrl-C during the second candidate
            self.count += 1
            return core.Measurement(cand, core.STOPPED, GiB, int(0.9 * GiB), (), 350.0, 1,
                                    note="stopped by Ctrl-C")
        return stand_in(self, cand)

    monkeypatch.setattr(runner_module(), "__call__", stopped_second)
    res = runner.invoke(main, ["tune", "--preset", "tiny_mamba", "--num-gpus", "2",
                               "--json"])
    assert res.exit_code == 130, res.output
    data = json.loads(res.stdout)
    assert data["interrupted"] and [c["status"] for c in data["candidates"]] == \
        ["fits", "stopped"]
    assert data["candidates"][1]["tokens_per_s"] == 350.0  # kept, not thrown away
    assert data["chosen"]["micro_batch"] == 4  # only a finished candidate is chosen
    assert not record_path().exists()  # an interrupted tune is not remembered


def test_config_gives_the_stage_and_global_batch(work: Path, data_dir: Path, runner,
                                                 monkeypatch) -> None:
    monkeypatch.setattr(runner_module(), "__call__", stand_in)
    res = runner.invoke(main, ["--auto", "--num-gpus", "2", "--preset", "tiny_mamba",
                               "--global-batch", "8", "--zero-stage", "1", "-o", "mine.json"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["tune", "--config", "mine.json", "--num-gpus", "2",
                               "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["global_batch"] == 8
    assert {c["zero_stage"] for c in data["candidates"]} == {1}
    assert {c["global_batch"] for c in data["candidates"]} == {8}
