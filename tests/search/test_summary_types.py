"""TaskSummary and DebugReport: typed results whose JSON shapes editors rely on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.artifacts.debug_report import DebugReport
from engine.artifacts.summary import TaskSummary
from engine.artifacts.taskdir import TaskDir
from engine.batch.metrics import outcome_from_summary
from engine.bench import EvalResult

# The documented summary keys (docs/events.md, task_finished), in order.
SUMMARY_KEYS = [
    "task_id", "reference", "task_dir", "finished", "best_speedup", "best_node", "best_round",
    "best_kernel", "correct", "nodes", "correct_nodes", "buggy_nodes", "rounds", "rounds_run",
    "llm_calls", "failed_llm_calls", "prompt_tokens", "completion_tokens", "cost_usd", "agent",
    "model", "device", "seed", "score_trace", "figure", "wall_s",
    # appended later (older keys keep their order)
    "search_best_speedup", "remeasured", "baseline_nodes", "agent_calls", "agent_fallback",
    "atol", "rtol", "best_generated",
]  # fmt: skip


def sample() -> TaskSummary:
    return TaskSummary(
        task_id="relu",
        reference="/refs/relu.py",
        task_dir="/runs/relu-1",
        best_speedup=1.8,
        best_node=2,
        best_round=2,
        best_kernel="/runs/relu-1/best_kernel.py",
        correct=True,
        nodes=3,
        correct_nodes=2,
        llm_calls=5,
        score_trace=[[0, 1.0], [1, 1.0], [2, 1.8]],
    )


def test_summary_json_shape_and_round_trip(tmp_path: Path) -> None:
    summary = sample()
    assert list(summary.to_dict()) == SUMMARY_KEYS
    task = TaskDir(tmp_path, "relu")
    task.write_summary(summary)
    assert list(json.loads(task.summary_path.read_text())) == SUMMARY_KEYS
    assert task.load_summary() == summary


def test_summary_from_older_or_newer_writers() -> None:
    data = {"task_id": "t", "reference": "r.py", "task_dir": "/d", "future_field": 1}
    summary = TaskSummary.from_dict(data)
    assert summary.nodes == 0 and summary.best_speedup is None
    with pytest.raises(ValueError, match="lacks task_dir"):
        TaskSummary.from_dict({"task_id": "t", "reference": "r.py"})
    with pytest.raises(ValueError, match="JSON object"):
        TaskSummary.from_dict([])  # type: ignore[arg-type]


def test_batch_outcome_reads_the_typed_summary() -> None:
    outcome = outcome_from_summary("000_relu", "/refs/relu.py", sample())
    assert (outcome.task_dir, outcome.correct, outcome.best_speedup) == ("/runs/relu-1", True, 1.8)
    assert (outcome.nodes, outcome.correct_nodes, outcome.llm_calls) == (3, 2, 5)
    assert outcome.best_round == 2 and outcome.error is None


def test_debug_report_keeps_its_json_keys() -> None:
    original = EvalResult(compiled=True, correct=False, error="mismatch", stage="correctness")
    fixed = EvalResult(compiled=True, correct=True, speedup=1.1)
    report = DebugReport(original=original, fixed_code="class ModelNew: ...", fixed=fixed)
    data = json.loads(json.dumps(report.to_dict()))
    assert list(data) == ["original", "fixed_code", "fixed", "error"]
    assert data["original"] == original.to_dict() and data["fixed"]["correct"] is True
    assert DebugReport.from_dict(data) == report
    assert report.ok and report.final is fixed
    failed = DebugReport(original=original, error="debug agent: HTTP 500")
    assert not failed.ok and failed.to_dict()["fixed"] is None
    assert not DebugReport().ok
