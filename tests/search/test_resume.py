"""kill -9 in the middle of `stark optimize`, then `--resume`: no node lost, none redone,
and a finished run is not rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.search.conftest import QUICK

ROUNDS = 3
REPO = Path(__file__).resolve().parents[2]


def stark(*args: str, env: dict[str, str]) -> list[str]:
    return [sys.executable, "-m", "engine", *args]


def saved_nodes(task_dir: Path) -> list[dict]:
    try:
        return json.loads((task_dir / "tree.json").read_text())["tree"]["nodes"]
    except (OSError, ValueError, KeyError):
        return []


@pytest.mark.slow
def test_kill9_then_resume(tmp_path: Path, tiny_reference: Path, clean_agent_env: None) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = tmp_path / "runs"
    command = stark(
        "optimize",
        str(tiny_reference),
        "--agent",
        "offline",
        "--rounds",
        str(ROUNDS),
        "--device",
        "cpu",
        "--out",
        str(out),
        "--events",
        "jsonl",
        "--timing-budget",
        "0.3",
        *QUICK[2:],
        env=env,
    )
    proc = subprocess.Popen(
        command,
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    task_dir: Path | None = None
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            found = list(out.glob("*/tree.json"))
            if found and saved_nodes(found[0].parent):
                task_dir = found[0].parent
                break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: CLI and fork server
        proc.communicate(timeout=30)
    assert task_dir is not None, "no node was saved before the deadline"
    before = saved_nodes(task_dir)
    assert 1 <= len(before) < ROUNDS, "the run finished before it could be killed"
    assert not (task_dir / "summary.json").exists()

    resumed = subprocess.run(
        stark("optimize", "--resume", str(task_dir), "--json", env=env),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    after = saved_nodes(task_dir)
    assert [n["node_id"] for n in after] == list(range(ROUNDS))
    assert summary["nodes"] == ROUNDS and summary["finished"]
    for old in before:  # nothing lost, nothing redone (same code, same verdict)
        new = after[old["node_id"]]
        assert {k: v for k, v in new.items() if k != "children"} == {
            k: v for k, v in old.items() if k != "children"
        }
        assert set(old["children"]) <= set(new["children"])
    for node in after:
        assert Path(node["code_path"]).read_text() == node["code"]

    # a finished run is not rerun: it reports its summary and leaves the state alone
    stamp = (task_dir / "tree.json").stat().st_mtime_ns
    again = subprocess.run(
        stark("optimize", "--resume", str(task_dir), "--json", env=env),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["nodes"] == ROUNDS
    assert (task_dir / "tree.json").stat().st_mtime_ns == stamp
