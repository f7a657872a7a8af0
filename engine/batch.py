"""Batch runs: many references, one task directory each, one summary with the
KernelBench metrics.

Metrics (KernelBench's definitions):
- fast_p: the fraction of *all* tasks whose best kernel is correct AND faster than
  the reference by more than p (speedup > p). fast_0 is therefore the correctness rate.
- mean_speedup / geomean_speedup: over the tasks with a correct kernel only;
- geomean_speedup_all: over every task, counting a task without a correct kernel as
  1.0 (you would keep the reference), which is what a user of the batch gets.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.summary import TaskSummary
from engine.taskdir import safe_name

FAST_P_THRESHOLDS: tuple[float, ...] = (0.0, 1.0, 1.5, 2.0)


@dataclass(slots=True)
class TaskOutcome:
    task: str
    reference: str
    task_dir: str | None
    correct: bool
    best_speedup: float | None
    nodes: int = 0
    correct_nodes: int = 0
    llm_calls: int = 0
    best_round: int | None = None
    error: str | None = None  # why the task did not run or failed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def expand_paths(paths: list[str]) -> list[Path]:
    """Files as given; directories expand to their *.py files (sorted, non-recursive,
    skipping __init__.py and private modules). Raises FileNotFoundError for a path that
    does not exist and ValueError when nothing is left."""
    files: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            files.extend(p for p in sorted(path.glob("*.py")) if not p.name.startswith(("_", ".")))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path} does not exist")
    unique = list(dict.fromkeys(p.resolve() for p in files))
    if not unique:
        raise ValueError("no reference .py files in the given paths")
    return unique


def unique_task_ids(paths: list[Path]) -> list[str]:
    """One task id per reference: its safe file stem, with `-2`, `-3`, ... for a stem seen
    before (`a/relu.py` and `b/relu.py`), so events and trace files never mix two tasks."""
    taken: set[str] = set()
    ids: list[str] = []
    for path in paths:
        base = safe_name(path.stem)
        candidate, n = base, 1
        while candidate in taken:
            n += 1
            candidate = f"{base}-{n}"
        taken.add(candidate)
        ids.append(candidate)
    return ids


def batch_exit_code(outcomes: list[TaskOutcome]) -> int:
    """1 when no task produced a result (every one errored), else 0: a batch that only
    failed to find a correct kernel still ran, but one where nothing ran is a failure."""
    return 1 if outcomes and all(o.error for o in outcomes) else 0


def sample_tasks(paths: list[Path], k: int | None, seed: int) -> list[Path]:
    """A seeded sample of k tasks, kept in input order; all when k is None or >= len."""
    if k is None or k >= len(paths):
        return list(paths)
    if k < 1:
        raise ValueError(f"--sample must be >= 1, not {k}")
    chosen = set(random.Random(seed).sample(range(len(paths)), k))
    return [p for i, p in enumerate(paths) if i in chosen]


def fast_p(outcomes: list[TaskOutcome], p: float) -> float:
    if not outcomes:
        return 0.0
    hits = sum(
        1 for o in outcomes if o.correct and o.best_speedup is not None and o.best_speedup > p
    )
    return hits / len(outcomes)


def _geomean(values: list[float]) -> float | None:
    positive = [v for v in values if v > 0]
    if not positive:
        return None
    return math.exp(sum(math.log(v) for v in positive) / len(positive))


def summarize(outcomes: list[TaskOutcome]) -> dict[str, Any]:
    correct = [o.best_speedup for o in outcomes if o.correct and o.best_speedup is not None]
    everyone = [
        o.best_speedup if o.correct and o.best_speedup is not None else 1.0 for o in outcomes
    ]
    metrics: dict[str, Any] = {
        "tasks": len(outcomes),
        "correct_tasks": len(correct),
        "correctness_rate": len(correct) / len(outcomes) if outcomes else 0.0,
        "mean_speedup": sum(correct) / len(correct) if correct else None,
        "geomean_speedup": _geomean(correct),
        "geomean_speedup_all": _geomean(everyone),
        "llm_calls": sum(o.llm_calls for o in outcomes),
    }
    for p in FAST_P_THRESHOLDS:
        metrics[f"fast_{p:g}"] = fast_p(outcomes, p)
    return metrics


def outcome_from_summary(task: str, reference: str, summary: TaskSummary) -> TaskOutcome:
    return TaskOutcome(
        task=task,
        reference=reference,
        task_dir=summary.task_dir,
        correct=summary.correct,
        best_speedup=summary.best_speedup,
        nodes=summary.nodes,
        correct_nodes=summary.correct_nodes,
        llm_calls=summary.llm_calls,
        best_round=summary.best_round,
    )
