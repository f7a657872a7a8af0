"""Shared by the batch tests: tiny references, a clean environment for `stark` subprocesses
(offline agent, no endpoint, one compile cache per session), and readers of a run's verdicts.

Every `stark` here runs as a subprocess, as a user runs it: worker processes, kill -9 and Ray
need a real process tree. Every wait is bounded.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `tests.*` imports also under a bare `pytest tests/batch/`
    sys.path.insert(0, str(ROOT))

from tests.search.conftest import QUICK, TINY_REFERENCE  # noqa: E402

ROUNDS = 2  # seed + one expansion: the tree's shape does not depend on timing noise
REFERENCES = {
    "a_relu": TINY_REFERENCE,
    "b_tanh": TINY_REFERENCE.replace("torch.relu", "torch.tanh"),
    "c_sigmoid": TINY_REFERENCE.replace("torch.relu", "torch.sigmoid"),
}
_ENDPOINT_VARIABLES = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "STARK_API_KEY", "STARK_BASE_URL")


@pytest.fixture(scope="session")
def batch_refs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("refs")
    for name, source in REFERENCES.items():
        (folder / f"{name}.py").write_text(source)
    return folder


@pytest.fixture(scope="session")
def stark_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of every `stark` subprocess (and of a Ray cluster's workers)."""
    env = {k: v for k, v in os.environ.items() if k not in _ENDPOINT_VARIABLES}
    env["PYTHONPATH"] = str(ROOT)
    env["STARK_CACHE_DIR"] = str(tmp_path_factory.mktemp("stark-cache"))
    env["STARK_OFFLINE_KERNELS"] = "0"  # plain-PyTorch offline kernels: no 25 s builds
    return env


def stark_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "engine", *args]


def batch_args(refs: Path, out: Path, *extra: str, rounds: int = ROUNDS) -> list[str]:
    return [
        "batch",
        str(refs),
        "--agent",
        "offline",
        "--rounds",
        str(rounds),
        "--device",
        "cpu",
        "--out",
        str(out),
        *QUICK,
        *extra,
    ]


def run_stark(args: list[str], env: dict[str, str], timeout: float = 600) -> dict[str, Any]:
    """Run `stark ARGS --json` to its end; its summary object."""
    done = subprocess.run(
        stark_command(*args, "--json"),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def tree_nodes(task_dir: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads((task_dir / "tree.json").read_text())["tree"]["nodes"])
    except (OSError, ValueError, KeyError):
        return []


def verdicts(run_dir: Path) -> dict[str, Any]:
    """Per task, what must not depend on how the batch was run: per node its phase, the
    benchmark's verdict and the kernel's code (the offline agent is deterministic), and the
    task's node counts and error. Not the `baseline` label, nor so the task's `correct`: a
    node that behaves as the reference is labelled by whether its speedup lies within noise
    of 1.0, a timing judgement that can differ between two runs of one batch."""
    summary = json.loads((run_dir / "summary.json").read_text())
    result = {}
    for task in summary["tasks"]:
        nodes = [
            (
                node["phase"],
                bool((node.get("metrics") or {}).get("correct")),
                node["error"],
                hashlib.sha256((node.get("code") or "").encode()).hexdigest()[:12],
            )
            for node in tree_nodes(run_dir / task["task"])
        ]
        counts = (task["nodes"], task["correct_nodes"])
        result[task["task"]] = (counts, task["error"], nodes)
    return result


def verify_counts(task_dir: Path) -> dict[int, int]:
    """How many times each node was benchmarked: VERIFY records in the trace index."""
    counts: dict[int, int] = {}
    for index in task_dir.glob("trace/*/trace_index.jsonl"):
        for line in index.read_text().splitlines():
            record = json.loads(line)
            if record.get("action") == "VERIFY" and record.get("node_id") is not None:
                counts[record["node_id"]] = counts.get(record["node_id"], 0) + 1
    return counts


@pytest.fixture(scope="session")
def serial_run(
    batch_refs: Path, stark_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The reference batch: every task in one process (`--workers 1`)."""
    summary = run_stark(batch_args(batch_refs, tmp_path_factory.mktemp("serial")), stark_env)
    return Path(summary["run_dir"])


@pytest.fixture
def child_processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; any still alive at teardown is killed (by its own pid)."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
