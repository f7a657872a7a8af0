"""kill -9 of the driver in the middle of `stark batch --workers 2`, then `--resume`: its
workers die with it, every task finishes, no node committed before the kill is lost or
benchmarked again, and resuming a finished batch runs nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.batch.conftest import (
    ROOT,
    batch_args,
    run_stark,
    stark_command,
    tree_nodes,
    verify_counts,
)

ROUNDS = 4


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def committed(run_dir: Path) -> dict[str, dict[int, str]]:
    """Per task directory: node id -> code of every node in its tree.json."""
    return {
        task.name: {n["node_id"]: n["code"] for n in tree_nodes(task)}
        for task in sorted(run_dir.glob("[0-9][0-9][0-9]_*"))
    }


def kill_driver_mid_batch(
    command: list[str], out: Path, env: dict[str, str], started: list[Any]
) -> tuple[Path, dict[str, dict[int, str]], dict[str, dict[int, int]]]:
    """Start the batch, kill -9 only its driver once some task has 2 nodes and none has all;
    the run dir, and each task's committed nodes and VERIFY counts at that moment."""
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    started.append(proc)
    wait_for(lambda: any(out.glob("batch-*/summary.json")), 120, "the run directory")
    (run_dir,) = out.glob("batch-*")

    def mid_batch() -> bool:
        sizes = [len(nodes) for nodes in committed(run_dir).values()]
        assert proc.poll() is None, "the batch ended before it could be killed"
        return any(s >= 2 for s in sizes)

    wait_for(mid_batch, 300, "a task with two nodes")
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert workers, "the driver has no worker processes"
    os.kill(proc.pid, signal.SIGKILL)  # the driver alone: its workers must follow by themselves
    proc.wait(timeout=30)
    before = committed(run_dir)
    counts = {name: verify_counts(run_dir / name) for name in before}
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, f"workers outlived the killed driver: {alive}"
    assert any(len(nodes) < ROUNDS for nodes in before.values()), "nothing left to resume"
    return run_dir, before, counts


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_kill9_of_the_driver_then_resume(
    batch_refs: Path, stark_env: dict[str, str], tmp_path: Path, child_processes: list[Any]
) -> None:
    out = tmp_path / "runs"
    command = stark_command(*batch_args(batch_refs, out, "--workers", "2", rounds=ROUNDS))
    run_dir, before, counts = kill_driver_mid_batch(command, out, stark_env, child_processes)

    summary = run_stark(["batch", "--resume", str(run_dir), "--workers", "2"], stark_env)
    assert summary["tasks_pending"] == 0 and len(summary["tasks"]) == 3
    after = committed(run_dir)
    for task in summary["tasks"]:
        name = task["task"]
        assert task["error"] is None and task["nodes"] == ROUNDS, task
        assert json.loads((run_dir / name / "tree.json").read_text())["finished"]
        # No committed node lost or changed, and none benchmarked again.
        assert {i: after[name][i] for i in before.get(name, {})} == before.get(name, {})
        now = verify_counts(run_dir / name)
        assert {i: now.get(i, 0) for i in before.get(name, {})} == {
            i: counts[name].get(i, 0) for i in before.get(name, {})
        }

    # A finished batch resumes to the same summary without running anything.
    counts_after = {name: verify_counts(run_dir / name) for name in after}
    again = run_stark(["batch", "--resume", str(run_dir)], stark_env, timeout=120)
    assert [t["task"] for t in again["tasks"]] == [t["task"] for t in summary["tasks"]]
    assert again["metrics"] == summary["metrics"]
    assert {name: verify_counts(run_dir / name) for name in after} == counts_after
    assert committed(run_dir) == after


def test_resume_of_a_directory_that_is_not_a_batch(
    tmp_path: Path, stark_env: dict[str, str]
) -> None:
    done = subprocess.run(
        stark_command("batch", "--resume", str(tmp_path)),
        cwd=ROOT,
        env=stark_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "not a batch run directory" in done.stderr, done.stderr
