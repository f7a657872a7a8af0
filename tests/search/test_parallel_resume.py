"""SIGKILL a `stark optimize --parallel 3` while rounds are in flight, then `--resume`: the
saved tree is whole (every node complete, none half-recorded), the rounds that were in
flight are redone with their saved selections, no committed node is benchmarked again, and
the finished tree is the one an uninterrupted run builds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from engine.artifacts.events import event_from_dict
from engine.cli import main
from tests.search.test_parallel_search import (
    ParentScript,
    check_trace,
    optimize_args,
    trace_index,
    tree_shape,
)

ROUNDS = 8
REPO = Path(__file__).resolve().parents[2]
KEY = "sk-test-parallel-resume-0123456789"


def saved_state(out: Path) -> dict[str, Any] | None:
    for path in out.glob("*/tree.json"):
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None
    return None


def stark(*args: str) -> list[str]:
    return [sys.executable, "-m", "engine", *args]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_kill_mid_flight_then_resume(
    fake_openai: Any,
    tiny_reference: Path,
    tmp_path: Path,
    clean_agent_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    script = ParentScript(delay_s=1.0)
    server = fake_openai(script)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENAI_API_KEY": KEY, "STARK_MAX_RETRIES": "0"}
    out = tmp_path / "killed"
    args = optimize_args(tiny_reference, out, server.base_url, "--rounds", str(ROUNDS))
    proc = subprocess.Popen(
        stark(*args, "--parallel", "3"),
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            state = saved_state(out)
            if state and len(state["tree"]["nodes"]) >= 2 and state["in_flight"]:
                break
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its fork servers and workers
        _, err = proc.communicate(timeout=60)
    killed_at = time.time()
    before = saved_state(out)
    assert before is not None and before["in_flight"], err.decode()[-2000:]
    (task_dir,) = out.iterdir()
    committed = len(before["tree"]["nodes"])
    assert 2 <= committed < ROUNDS and not before["finished"]
    assert not (task_dir / "summary.json").exists()
    # whole: every saved node has its verdict or its reason, and its metrics file
    for node in before["tree"]["nodes"]:
        assert node["metrics"] is not None or node["error"], node
        assert (task_dir / "evaluation" / f"node_{node['node_id']:04d}.json").exists()
    in_flight = before["in_flight"]
    assert [d["round"] for d in in_flight] == list(range(committed, committed + len(in_flight)))
    assert [d["node_id"] for d in in_flight] == [d["round"] for d in in_flight]

    resumed = subprocess.run(
        stark("optimize", "--resume", str(task_dir), "--events", "jsonl"),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    events = [event_from_dict(json.loads(line)) for line in resumed.stdout.decode().splitlines()]
    after = json.loads((task_dir / "tree.json").read_text())
    assert after["finished"] and after["in_flight"] == []
    nodes = after["tree"]["nodes"]
    assert [n["node_id"] for n in nodes] == list(range(ROUNDS))

    # committed nodes are kept as they were (not redone); the in-flight rounds are redone
    # from their saved selections, first
    for old, new in zip(before["tree"]["nodes"], nodes, strict=False):
        assert {k: v for k, v in old.items() if k != "children"} == {
            k: v for k, v in new.items() if k != "children"
        }
    for dispatch in in_flight:
        assert nodes[dispatch["node_id"]]["parent_id"] == dispatch["parent_id"]
    selected = [(e.round, e.node_id) for e in events if e.kind == "node_selected"]
    assert selected[: len(in_flight)] == [(d["round"], d["parent_id"]) for d in in_flight]
    assert [e.node.id for e in events if e.kind == "node_benchmarked"] == list(
        range(committed, ROUNDS)
    )
    # benchmarked after the kill: only the nodes the saved tree did not have, each once
    late = [
        r["node_id"]
        for r in trace_index(task_dir)
        if r["action"] == "VERIFY" and r["ts"] > killed_at
    ]
    assert all(node_id >= committed for node_id in late) and len(late) == len(set(late))
    check_trace(trace_index(task_dir))

    # the same tree as a run that was never interrupted
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    fresh_out = tmp_path / "uninterrupted"
    code = main(
        optimize_args(tiny_reference, fresh_out, server.base_url, "--rounds", str(ROUNDS))
        + ["--parallel", "3"]
    )
    assert code == 0, capsys.readouterr().err
    (fresh_dir,) = fresh_out.iterdir()
    assert tree_shape(fresh_dir) == tree_shape(task_dir)
