"""The run state and status logic, against fake process tables (no process is started)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ds_wizard.core.runs import rundir
from ds_wizard.core.runs.runstate import (
    SUPERVISOR_MODULE,
    ProcessTable,
    ProcInfo,
    RunState,
    RunStatus,
    last_metrics,
    list_run_summaries,
    read_run_state,
    run_status,
    summarize_run,
    write_run_state,
)

SUP_PID, RUNNER_PID = 4000, 4100


def make_run(runs_dir: Path, name: str, created: str = "2026-11-29T10:00:00",
             steps: int = 30) -> Path:
    d = runs_dir / name
    (d / rundir.CHECKPOINTS).mkdir(parents=True)
    (d / rundir.RUN_JSON).write_text(json.dumps(
        {"created": created, "preset": "tiny_mamba", "steps": steps}))
    return d.resolve()


def supervisor(run_dir: Path, pid: int = SUP_PID) -> ProcInfo:
    return ProcInfo(pid, pid, ("python", "-m", SUPERVISOR_MODULE, str(run_dir), "--",
                               "deepspeed", "--run-dir", str(run_dir)))


def job(run_dir: Path, pid: int, pgid: int = RUNNER_PID) -> ProcInfo:
    return ProcInfo(pid, pgid, ("python", "-u", "-m", "ds_wizard.train", "--run-dir",
                                str(run_dir)))


def state(status: str = "running", **kw) -> RunState:
    return RunState(status=status, supervisor_pid=SUP_PID, pgid=RUNNER_PID,
                    started="2026-11-29T10:00:05", steps=30, **kw)


def test_state_round_trips_and_bad_files_read_as_none(tmp_path: Path) -> None:
    d = make_run(tmp_path, "a")
    assert read_run_state(d) is None
    s = state(exit_code=None, command="deepspeed …")
    write_run_state(d, s)
    assert read_run_state(d) == s
    ended = s.ended_as("stopped", 0, "stopped on request")
    assert ended.status == "stopped" and ended.ended and not ended.active
    (d / "state.json").write_text('{"status": "dancing", "supervisor_pid": 1}')
    assert read_run_state(d) is None
    (d / "state.json").write_text("[1, 2")
    assert read_run_state(d) is None


@pytest.mark.parametrize(("recorded", "procs", "expected"), [
    ("running", ["sup", "ranks"], RunStatus.RUNNING),
    ("starting", ["sup"], RunStatus.RUNNING),
    ("stopping", ["sup", "ranks"], RunStatus.RUNNING),
    ("running", ["ranks"], RunStatus.LOST),  # kill -9 of the supervisor
    ("running", [], RunStatus.FAILED),  # it died without recording the end
    ("finished", [], RunStatus.FINISHED),
    ("stopped", [], RunStatus.STOPPED),
    ("failed", [], RunStatus.FAILED),
    ("finished", ["ranks"], RunStatus.LOST),  # recorded as ended, yet processes live
])
def test_status_is_checked_against_the_processes(tmp_path: Path, recorded: str,
                                                 procs: list[str],
                                                 expected: RunStatus) -> None:
    d = make_run(tmp_path, "a")
    rows = []
    if "sup" in procs:
        rows.append(supervisor(d))
    if "ranks" in procs:
        rows += [job(d, RUNNER_PID), job(d, RUNNER_PID + 1), job(d, RUNNER_PID + 2)]
    status, live, sup = run_status(d, state(recorded), ProcessTable(rows))
    assert status is expected
    assert [p.pid for p in live] == ([RUNNER_PID, RUNNER_PID + 1, RUNNER_PID + 2]
                                     if "ranks" in procs else [])
    assert sup == ("sup" in procs)


def test_a_reused_pid_is_not_the_supervisor(tmp_path: Path) -> None:
    d = make_run(tmp_path, "a")
    other = ProcInfo(SUP_PID, SUP_PID, ("vim", "notes.txt"))
    also = ProcInfo(RUNNER_PID, RUNNER_PID, ("bash",))  # in the recorded group, another run
    status, live, sup = run_status(d, state("running"), ProcessTable([other, also]))
    assert (status, live, sup) == (RunStatus.FAILED, [], False)


def test_another_runs_processes_do_not_count(tmp_path: Path) -> None:
    a, b = make_run(tmp_path, "a"), make_run(tmp_path, "b")
    table = ProcessTable([supervisor(b, 5000), job(b, 5100, 5100)])
    assert run_status(a, state("running"), table)[0] is RunStatus.FAILED
    assert run_status(b, RunState("running", 5000, 5100), table)[0] is RunStatus.RUNNING


def test_a_run_without_state_is_unknown_finished_or_lost(tmp_path: Path) -> None:
    d = make_run(tmp_path, "old")
    empty = ProcessTable([])
    assert run_status(d, None, empty)[0] is RunStatus.UNKNOWN
    assert run_status(d, None, ProcessTable([job(d, 77, 77)]))[0] is RunStatus.LOST
    (d / rundir.FINAL).mkdir()
    assert run_status(d, None, empty)[0] is RunStatus.FINISHED


def test_last_metrics_skips_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    assert last_metrics(path) is None
    lines = [json.dumps({"step": i, "loss": 5.0 - i / 10}) for i in range(1, 2001)]
    path.write_text("\n".join(lines) + "\n" + '{"step": 2001, "lo')
    assert last_metrics(path) == {"step": 2000, "loss": 5.0 - 200.0}


def test_summaries_list_every_run_oldest_first(tmp_path: Path) -> None:
    a = make_run(tmp_path, "tiny_mamba-1", created="2026-11-29T09:00:00")
    b = make_run(tmp_path, "tiny_mamba-2", created="2026-11-29T11:00:00", steps=50)
    (tmp_path / "not-a-run").mkdir()
    (a / rundir.METRICS).write_text(json.dumps(
        {"step": 12, "loss": 3.5, "tokens_per_s": 900.0}) + "\n")
    tag = a / rundir.CHECKPOINTS / "global_step10"
    tag.mkdir()
    rundir.write_marker(a / rundir.CHECKPOINTS, "global_step10", 10, {})
    write_run_state(a, state("stopped", exit_code=0, stop_reason="stopped on request"))
    write_run_state(b, RunState("stopping", 5000, 5100, steps=60))
    table = ProcessTable([supervisor(b, 5000), job(b, 5100, 5100)])
    got = list_run_summaries(tmp_path, table)
    assert [s.name for s in got] == ["tiny_mamba-1", "tiny_mamba-2"]
    first, second = got
    assert (first.status, first.step, first.total_steps, first.loss, first.tokens_per_s,
            first.checkpoint_step) == (RunStatus.STOPPED, 12, 30, 3.5, 900.0, 10)
    assert first.resumable and not first.alive and not first.stopping
    assert first.started == "2026-11-29T10:00:05"
    assert (second.status, second.total_steps, second.pids) == (RunStatus.RUNNING, 60, (5100,))
    assert second.alive and second.stopping and not second.resumable
    row = second.to_dict()
    assert row["status"] == "running" and row["run_dir"] == str(b) and row["alive"]
    json.dumps(row)
    assert summarize_run(a, table) == first
    write_run_state(b, RunState("running", 5000, 5100))
    gone = summarize_run(b, ProcessTable([]))
    assert gone.status is RunStatus.FAILED and "without recording the end" in gone.stop_reason
    assert list_run_summaries(tmp_path / "none", table) == []


def test_resolve_run_ref_accepts_name_prefix_path_and_latest(tmp_path: Path) -> None:
    a = make_run(tmp_path, "tiny_mamba-20261129-100000", created="2026-11-29T10:00:00")
    b = make_run(tmp_path, "tiny_mamba-20261129-110000", created="2026-11-29T11:00:00")
    assert rundir.resolve_run_ref("latest", tmp_path).resolve() == b
    assert rundir.resolve_run_ref(a.name, tmp_path).resolve() == a
    assert rundir.resolve_run_ref("tiny_mamba-20261129-10", tmp_path).resolve() == a
    assert rundir.resolve_run_ref(str(b), tmp_path / "elsewhere").resolve() == b
    with pytest.raises(rundir.RunError, match="matches 2 runs"):
        rundir.resolve_run_ref("tiny_mamba", tmp_path)
    with pytest.raises(rundir.RunError, match="no run 'zzz'"):
        rundir.resolve_run_ref("zzz", tmp_path)
    with pytest.raises(rundir.RunError, match="not a ds-wizard run directory"):
        rundir.resolve_run_ref(str(tmp_path), tmp_path)
    with pytest.raises(rundir.RunError, match="no runs under"):
        rundir.resolve_run_ref("latest", tmp_path / "empty")


def test_a_stalled_run_reads_as_stalled_with_its_line_and_trackers(tmp_path: Path) -> None:
    """Issue 22: `runs --json` and the Runs screen read the stall from state.json."""
    import time

    from ds_wizard.core.runs.stall import Stall

    d = make_run(tmp_path, "a")
    stall = Stall(since=time.time() - 240, threshold_s=60, rank=3, host="b",
                  phase="backward", step=812, single_host=False, autopsy=str(d / "stalls/x"))
    write_run_state(d, state("stalled", stall=stall.to_dict(),
                             trackers={"tensorboard": str(d / "tensorboard" / "a")}))
    table = ProcessTable([supervisor(d), job(d, 4101)])
    s = summarize_run(d, table)
    assert s.status is RunStatus.STALLED and s.alive
    assert s.stall is not None and s.stall.startswith(
        "stalled for 4m: rank 3 (node b) last in backward at step 812")
    data = json.loads(json.dumps(s.to_dict()))
    assert data["status"] == "stalled" and data["stall_detail"]["autopsy"].endswith("x")
    assert data["trackers"] == {"tensorboard": str(d / "tensorboard" / "a")}
    # the supervisor gone: the recorded stall is not claimed as the live status
    lost = summarize_run(d, ProcessTable([job(d, 4101)]))
    assert lost.status is RunStatus.LOST and lost.stall is None
    # an episode that ended stays in the record
    write_run_state(d, state("running", stalls=[{**stall.to_dict(), "end": "moved"}]))
    again = summarize_run(d, table)
    assert again.status is RunStatus.RUNNING and again.stall is None
    assert again.stall_episodes[0]["end"] == "moved"
