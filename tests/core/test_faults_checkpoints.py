"""Issue 15, faults 5 and 7 (checkpoints), fast: the completion marker's checksums, their
verification before anything is loaded, the fall-back to the newest intact tag, and
``--resume latest`` choosing a run that has something to resume.

The real 2-rank launches that prove the same end to end are in test_faults_runs.py.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

from _fault_helpers import planted_pickle
from click.testing import CliRunner

from ds_wizard.cli import main
from ds_wizard.core.runs import integrity, rundir
from ds_wizard.core.runs.runspec import Accelerator
from ds_wizard.launch import plan as planning
from ds_wizard.launch.plan import LaunchRequest

CPU = Accelerator("cpu", 0, "test: no GPU")


def fake_checkpoint(ckpt: Path, step: int, marker: bool = True,
                    files: dict[str, bytes] | None = None) -> Path:
    tag_dir = ckpt / rundir.checkpoint_tag(step)
    tag_dir.mkdir(parents=True)
    for name, data in (files or {
        "mp_rank_00_model_states.pt": b"model" * 200 + bytes([step % 256]),
        "zero_pp_rank_0_mp_rank_00_optim_states.pt": b"optim" * 300,
        "zero_pp_rank_1_mp_rank_00_optim_states.pt": b"optim" * 300 + b"1",
    }).items():
        (tag_dir / name).write_bytes(data)
    if marker:
        rundir.write_marker(ckpt, tag_dir.name, step, {})
    return tag_dir


# -- the marker ------------------------------------------------------------------------------


def test_marker_records_size_and_sha256_of_every_file(tmp_path: Path) -> None:
    tag = fake_checkpoint(tmp_path, 10)
    (tag / "sub").mkdir()
    (tag / "sub" / "extra.bin").write_bytes(b"abc")
    rundir.write_marker(tmp_path, tag.name, 10, {"world_size": 2})
    data = json.loads((tag / rundir.MARKER).read_text())
    assert data["hash"] == "sha256" and data["world_size"] == 2
    assert set(data["files"]) == {"mp_rank_00_model_states.pt", "sub/extra.bin",
                                  "zero_pp_rank_0_mp_rank_00_optim_states.pt",
                                  "zero_pp_rank_1_mp_rank_00_optim_states.pt"}
    assert data["files"]["sub/extra.bin"] == {
        "size": 3, "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}
    assert rundir.MARKER not in data["files"]


def test_hashing_streams_and_shares_split_the_files(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * integrity.CHUNK + 17))  # more than one chunk
    import hashlib

    assert integrity.file_digest(big) == integrity.FileDigest(
        big.stat().st_size, hashlib.sha256(big.read_bytes()).hexdigest())
    names = [f"f{i}" for i in range(7)]
    shares = [integrity.share_of(names, (r, 3)) for r in range(3)]
    # every file is hashed once, by one rank
    assert sorted(n for share in shares for n in share) == names
    assert all(set(a).isdisjoint(b) for i, a in enumerate(shares) for b in shares[i + 1:])


def test_an_intact_tag_verifies(tmp_path: Path) -> None:
    fake_checkpoint(tmp_path, 10)
    (info,) = rundir.scan_checkpoints(tmp_path)
    assert info.complete and info.files is not None
    assert rundir.check_checkpoint(info) == []
    # the shares of two ranks together check every file
    assert rundir.check_checkpoint(info, share=(0, 2)) == []
    assert rundir.check_checkpoint(info, share=(1, 2)) == []


def test_truncated_shard_is_found_by_its_size(tmp_path: Path) -> None:
    tag = fake_checkpoint(tmp_path, 10)
    shard = tag / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    shard.write_bytes(shard.read_bytes()[:100])
    (info,) = rundir.scan_checkpoints(tmp_path)
    assert info.complete  # the marker alone would call it good
    assert rundir.check_checkpoint(info, full=False) == [
        "zero_pp_rank_1_mp_rank_00_optim_states.pt has 100 bytes; 1,501 were written"]


def test_same_size_replacement_is_found_by_its_hash_by_the_rank_that_owns_it(
    tmp_path: Path,
) -> None:
    tag = fake_checkpoint(tmp_path, 10)
    model = tag / "mp_rank_00_model_states.pt"
    model.write_bytes(planted_pickle(tmp_path / "canary", model.stat().st_size))
    (info,) = rundir.scan_checkpoints(tmp_path)
    assert rundir.check_checkpoint(info, full=False) == []  # sizes cannot see it
    problems = rundir.check_checkpoint(info)
    assert problems == ["mp_rank_00_model_states.pt does not match the SHA-256 recorded "
                        "when it was written (changed since)"]
    # two ranks: the one whose share holds the file reports it; gathered, they refuse
    shares = [rundir.check_checkpoint(info, share=(r, 2)) for r in range(2)]
    assert [p for share in shares for p in share] == problems
    assert not (tmp_path / "canary").exists()


def test_added_missing_and_linked_files_are_refused(tmp_path: Path) -> None:
    tag = fake_checkpoint(tmp_path, 10)
    (tag / "planted.pt").write_bytes(b"x")
    (tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt").unlink()
    model = tag / "mp_rank_00_model_states.pt"
    elsewhere = tmp_path / "elsewhere.pt"
    elsewhere.write_bytes(model.read_bytes())
    model.unlink()
    model.symlink_to(elsewhere)  # same bytes, but not the file that was written
    (info,) = rundir.scan_checkpoints(tmp_path)
    assert sorted(rundir.check_checkpoint(info)) == [
        "mp_rank_00_model_states.pt is a symbolic link, not the file that was written",
        "planted.pt was not written by this run",
        "zero_pp_rank_0_mp_rank_00_optim_states.pt is missing",
    ]
    # only share 0 looks for unrecorded files, so it is reported once
    assert "planted.pt was not written by this run" not in rundir.check_checkpoint(
        info, share=(1, 2))


def test_a_special_file_in_a_tag_is_refused_without_opening_it(tmp_path: Path) -> None:
    tag = fake_checkpoint(tmp_path, 10)
    shard = tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    shard.unlink()
    os.mkfifo(shard)  # opening it for the hash would block for ever
    (info,) = rundir.scan_checkpoints(tmp_path)
    assert rundir.check_checkpoint(info) == [
        "zero_pp_rank_0_mp_rank_00_optim_states.pt is not a regular file"]


# -- choosing the tag to resume ------------------------------------------------------------


def test_corrupt_newest_tag_falls_back_to_the_newest_intact_one(tmp_path: Path) -> None:
    fake_checkpoint(tmp_path, 10)
    fake_checkpoint(tmp_path, 20)
    t30 = fake_checkpoint(tmp_path, 30)
    fake_checkpoint(tmp_path, 40, marker=False)  # crashed while saving
    shard = t30 / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    shard.write_bytes(shard.read_bytes()[:-1])
    choice = rundir.latest_intact(tmp_path)
    assert choice.chosen is not None and choice.chosen.tag == "global_step20"
    assert choice.notes == (
        "skipping incomplete checkpoint global_step40 (no completion marker)",
        "checkpoint global_step30 is damaged and will not be loaded: "
        "zero_pp_rank_0_mp_rank_00_optim_states.pt has 1,499 bytes; 1,500 were written",
    )
    # the marker alone still names 30: it is what used to be loaded
    assert rundir.latest_complete(tmp_path).tag == "global_step30"


def test_no_intact_tag_leaves_nothing_to_resume(tmp_path: Path) -> None:
    tag = fake_checkpoint(tmp_path, 10)
    (tag / "mp_rank_00_model_states.pt").write_bytes(b"")
    choice = rundir.latest_intact(tmp_path)
    assert choice.chosen is None and "global_step10 is damaged" in choice.notes[0]


def test_marker_from_before_checksums_is_loaded_with_a_warning(tmp_path: Path) -> None:
    tag = fake_checkpoint(tmp_path, 10, marker=False)
    (tag / rundir.MARKER).write_text(json.dumps({"tag": tag.name, "step": 10}))
    choice = rundir.latest_intact(tmp_path)
    assert choice.chosen is not None and choice.chosen.files is None
    assert "without checksums" in choice.notes[0]


def test_a_marker_with_an_unreadable_file_record_vouches_for_nothing(tmp_path: Path) -> None:
    tag = fake_checkpoint(tmp_path, 10)
    data = json.loads((tag / rundir.MARKER).read_text())
    data["files"] = []
    (tag / rundir.MARKER).write_text(json.dumps(data))
    assert rundir.latest_intact(tmp_path).chosen is None


def test_a_tag_written_again_loses_its_old_marker_first(tmp_path: Path) -> None:
    fake_checkpoint(tmp_path, 10)
    rundir.clear_marker(tmp_path, "global_step10")
    rundir.clear_marker(tmp_path, "global_step10")  # nothing left to clear: no error
    assert rundir.latest_complete(tmp_path) is None


# -- the launcher: plan, --resume latest -------------------------------------------------------


def _run_with(tmp_path: Path, steps: int = 50) -> Path:
    plan = planning.prepare_run(LaunchRequest("tiny_mamba", None, steps=steps,
                                              runs_dir=tmp_path, accelerator=CPU))
    return plan.run_dir


def test_resume_plan_names_the_tag_it_falls_back_to(tmp_path: Path) -> None:
    run = _run_with(tmp_path)
    ckpt = rundir.RunPaths(run).checkpoints
    fake_checkpoint(ckpt, 10)
    t20 = fake_checkpoint(ckpt, 20)
    (t20 / "mp_rank_00_model_states.pt").write_bytes(b"cut")
    plan = planning.prepare_run(LaunchRequest(resume=str(run), runs_dir=tmp_path,
                                              accelerator=CPU, dry_run=True))
    assert plan.resume_step == 10
    assert plan.notes[0].startswith("checkpoint global_step20 is damaged")
    assert plan.notes[1].startswith(f"resuming {run} from global_step10: next step 11")


def test_resume_refuses_when_every_tag_is_damaged(tmp_path: Path) -> None:
    run = _run_with(tmp_path)
    tag = fake_checkpoint(rundir.RunPaths(run).checkpoints, 10)
    (tag / "mp_rank_00_model_states.pt").unlink()
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = CliRunner().invoke(main, ["launch", "--resume", str(run), "--runs-dir",
                                       str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith("error: ")
    assert "global_step10 is damaged" in result.output
    assert "mp_rank_00_model_states.pt is missing" in result.output
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_resume_latest_skips_newer_runs_without_a_checkpoint(tmp_path: Path) -> None:
    older = _run_with(tmp_path)
    fake_checkpoint(rundir.RunPaths(older).checkpoints, 10)
    # newer runs: one crashed before its first checkpoint, one only has a damaged tag
    newer = _run_with(tmp_path)
    newest = _run_with(tmp_path)
    tag = fake_checkpoint(rundir.RunPaths(newest).checkpoints, 5)
    (tag / "mp_rank_00_model_states.pt").write_bytes(b"")
    assert rundir.list_runs(tmp_path)[-2:] == [newer, newest]
    assert rundir.resolve_run_ref("latest", tmp_path) == newest  # attach, stop: the newest
    assert rundir.resolve_run_ref("latest", tmp_path, resumable=True) == older
    plan = planning.prepare_run(LaunchRequest(resume="latest", runs_dir=tmp_path,
                                              accelerator=CPU, dry_run=True))
    assert plan.run_dir == older and plan.resume_step == 10


def test_resume_latest_with_no_checkpoint_anywhere_is_one_line(tmp_path: Path) -> None:
    _run_with(tmp_path)
    result = CliRunner().invoke(main, ["launch", "--resume", "latest", "--runs-dir",
                                       str(tmp_path)])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "no run under" in result.output and "complete checkpoint" in result.output


def test_the_planted_pickle_really_runs_when_torch_loads_it(tmp_path: Path) -> None:
    """Without the check the planted file executes: the other tests prove something."""
    canary = tmp_path / "canary"
    planted = tmp_path / "mp_rank_00_model_states.pt"
    planted.write_bytes(planted_pickle(canary, 4096))
    code = ("import sys, torch\n"
            "try:\n    torch.load(sys.argv[1], weights_only=False)\n"
            "except Exception:\n    pass\n")
    subprocess.run([sys.executable, "-c", code, str(planted)], check=True, timeout=300,
                   env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert canary.exists()


# -- the ranks' side, with two ranks as threads over a stand-in for torch.distributed --------


class _Collectives:
    """broadcast_object_list / all_gather_object for ``world`` threads, by value."""

    def __init__(self, world: int) -> None:
        import threading

        self.world = world
        self.barrier = threading.Barrier(world, timeout=30)
        self.slots: list[object] = [None] * world

    def rank(self, rank: int) -> object:
        shared = self

        class Dist:
            def broadcast_object_list(self, objs: list, src: int = 0) -> None:
                if rank == src:
                    shared.slots[src] = pickle.dumps(objs)
                shared.barrier.wait()
                objs[:] = pickle.loads(shared.slots[src])
                shared.barrier.wait()

            def all_gather_object(self, out: list, obj: object) -> None:
                shared.slots[rank] = pickle.dumps(obj)
                shared.barrier.wait()
                out[:] = [pickle.loads(s) for s in shared.slots]
                shared.barrier.wait()

        return Dist()


def _on_ranks(world: int, call) -> tuple[list[object], list[str]]:
    """Run ``call(trainer, dist)`` as ``world`` ranks; results by rank, rank 0's log."""
    import threading

    from ds_wizard.train.loop import Trainer

    coll = _Collectives(world)
    results: list[object] = [None] * world
    log: list[str] = []

    errors: list[BaseException] = []

    def run(rank: int) -> None:
        trainer = Trainer.__new__(Trainer)  # no signal handlers: this is not a rank process
        trainer.rank, trainer.world = rank, world
        trainer.tdist = dist = coll.rank(rank)
        trainer.log = (lambda text: log.append(text)) if rank == 0 else (lambda text: None)
        try:
            results[rank] = call(trainer, dist)
        except BaseException as exc:
            errors.append(exc)
            coll.barrier.abort()  # the other rank must not wait for this one

    threads = [threading.Thread(target=run, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return results, log


def test_ranks_hash_their_shares_into_the_same_marker_one_process_writes(
    tmp_path: Path,
) -> None:
    tag = fake_checkpoint(tmp_path, 10)
    single = json.loads((tag / rundir.MARKER).read_text())["files"]
    results, _ = _on_ranks(2, lambda trainer, dist: trainer._hash_tag(tag))
    assert results[0] == results[1] == single


def test_ranks_agree_to_fall_back_when_only_one_share_is_tampered(tmp_path: Path) -> None:
    fake_checkpoint(tmp_path, 10)
    t20 = fake_checkpoint(tmp_path, 20)
    names = sorted(rundir.scan_checkpoints(tmp_path)[-1].files)
    victim = t20 / integrity.share_of(names, (1, 2))[0]  # hashed by rank 1 only
    victim.write_bytes(planted_pickle(tmp_path / "canary", victim.stat().st_size))
    ckpt_paths = type("P", (), {"checkpoints": tmp_path})()  # only .checkpoints is read
    results, log = _on_ranks(2, lambda trainer, dist: trainer._choose_checkpoint(
        ckpt_paths, dist))
    assert results == ["global_step10", "global_step10"]
    assert log == [f"warning: checkpoint global_step20 is damaged and will not be loaded: "
                   f"{victim.name} does not match the SHA-256 recorded when it was written "
                   "(changed since)"]
    assert not (tmp_path / "canary").exists()
