"""`stark batch --workers N`: the same verdicts as one process, each worker on its own cores,
events still streamed per task, and usage errors before any run directory exists."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.batch.conftest import ROOT, batch_args, stark_command, verdicts


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_workers_give_the_same_verdicts_as_one(
    serial_run: Path, batch_refs: Path, stark_env: dict[str, str], tmp_path: Path
) -> None:
    done = subprocess.run(
        stark_command(
            *batch_args(batch_refs, tmp_path / "runs", "--workers", "2"), "--events", "jsonl"
        ),
        cwd=ROOT,
        env=stark_env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert verdicts(run_dir) == verdicts(serial_run)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["execution"] == {"workers": 2, "ray": None} and summary["tasks_pending"] == 0
    assert [t["task"] for t in summary["tasks"]] == ["000_a_relu", "001_b_tanh", "002_c_sigmoid"]
    # Every task's events reached the driver's stream, in order within each task.
    for task_id in ("a_relu", "b_tanh", "c_sigmoid"):
        kinds = [e["event"] for e in events if e["task_id"] == task_id]
        assert kinds[0] == "task_started" and kinds[-1] == "task_finished", kinds
        assert kinds.count("node_benchmarked") == 2
    # Each worker timed on its own share of the cores (torch threads = its cores).
    cores = len(os.sched_getaffinity(0))
    for metrics in run_dir.glob("*/evaluation/node_*.json"):
        result = json.loads(metrics.read_text())["result"]
        assert result["threads"] == cores // 2, metrics


def test_more_workers_than_cores_is_refused(
    batch_refs: Path, stark_env: dict[str, str], tmp_path: Path
) -> None:
    cores = len(os.sched_getaffinity(0))
    for extra, message in (
        (["--workers", str(cores + 1)], "each worker needs a core of its own"),
        (["--workers", "0"], "--workers must be >= 1"),
        (["--workers", "2", "--ray", "auto"], "either --workers N or --ray ADDRESS"),
        (["--max-concurrent-calls", "0"], "--max-concurrent-calls must be >= 1"),
    ):
        done = subprocess.run(
            stark_command(*batch_args(batch_refs, tmp_path / "runs", *extra)),
            cwd=ROOT,
            env=stark_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 2 and message in done.stderr, (extra, done.stderr)
    assert not (tmp_path / "runs").exists()  # refused before any run directory was made
