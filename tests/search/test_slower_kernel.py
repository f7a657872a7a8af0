"""A best kernel that re-measures slower than eager is kept on disk, but the final line says
to keep the reference and the batch geomean over all tasks counts it as 1.0."""

from __future__ import annotations

import math

import pytest

from engine.artifacts.remeasured import Comparison, Remeasured, Timing
from engine.artifacts.summary import TaskSummary
from engine.batch.metrics import TaskOutcome, summarize
from engine.cli.optimize import best_line


def slower() -> Remeasured:
    return Remeasured(
        vs_eager=Comparison(0.29, Timing(1.0, 0.01), Timing(3.45, 0.02), False, False)
    )


def test_the_final_line_says_no_kernel_beats_eager() -> None:
    summary = TaskSummary(
        task_id="t",
        reference="r.py",
        task_dir="d",
        best_speedup=0.29,
        best_node=3,
        best_kernel="d/best_kernel.py",
        correct=True,
        search_best_speedup=1.1,
        remeasured=slower(),
    )
    line = best_line(summary)
    assert line.startswith("no kernel faster than eager (best re-measured 0.29x vs eager")
    assert "keep the reference" in line and "node 3" in line
    summary.remeasured = Remeasured(
        vs_eager=Comparison(2.0, Timing(1.0, 0.01), Timing(0.5, 0.01), True, False)
    )
    assert best_line(summary).startswith("best 2.00x vs eager")


def test_a_slower_kernel_counts_as_the_reference_in_the_geomean_over_all_tasks() -> None:
    slow = TaskOutcome("a", "a.py", None, True, 0.29, remeasured=slower())
    fast = TaskOutcome("b", "b.py", None, True, 4.0)
    metrics = summarize([slow, fast])
    assert metrics["geomean_speedup_all"] == pytest.approx(math.sqrt(1.0 * 4.0))
    assert metrics["geomean_speedup"] == pytest.approx(math.sqrt(0.29 * 4.0))  # the kernels'
