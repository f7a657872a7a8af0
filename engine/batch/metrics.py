"""Batch runs: many references, one task directory each, one summary with the
KernelBench metrics.

Every speedup here is the RE-MEASURED one (`TaskSummary.best_speedup`: a fresh
interleaved evaluation of the task's best kernel after its search, engine.search.remeasure),
never the search's maximum over noisy measurements (kept as `search_best_speedup`), and
a copy of the reference (a `baseline` node) is never a task's best kernel.

Metrics (KernelBench's definitions, on the re-measured figures):
- fast_p (the headline): the fraction of *all* tasks whose best kernel is correct AND
  faster than the reference by more than p (speedup > p); for p >= 1 the win must also
  lie beyond both sides' IQRs (median ± IQR/2 apart), so noise alone never counts.
  fast_0 is therefore the correctness rate.
- fast_p_point: KernelBench's plain threshold on the point estimate (speedup > p), kept
  for comparison with published figures;
- wins_beyond_iqr / fast_1_beyond_iqr: the tasks (count / fraction of all) whose win
  over eager is beyond both sides' IQRs (fast_1_beyond_iqr == fast_1);
- mean_speedup / geomean_speedup: over the tasks with a correct kernel only;
- geomean_speedup_all: over every task, counting a task without a correct kernel, or
  whose kernel is slower than eager, as 1.0 (you would keep the reference), which is
  what a user of the batch gets;
- *_vs_compile: the same against torch.compile, over the tasks where it was measured
  (fast_1_vs_compile counts wins beyond the IQRs; fast_1_vs_compile_point does not);
- search_geomean_speedup: the geomean of the search's own figures, for comparison.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.artifacts.remeasured import Remeasured, geomean
from engine.artifacts.summary import TaskSummary
from engine.artifacts.taskdir import plain_task_id

FAST_P_THRESHOLDS: tuple[float, ...] = (0.0, 1.0, 1.5, 2.0)


@dataclass(slots=True)
class TaskOutcome:
    task: str
    reference: str
    task_dir: str | None
    correct: bool
    best_speedup: float | None  # re-measured vs eager (TaskSummary.best_speedup)
    search_best_speedup: float | None = None
    remeasured: Remeasured | None = None
    nodes: int = 0
    correct_nodes: int = 0
    baseline_nodes: int = 0
    llm_calls: int = 0
    agent_calls: int = 0
    agent_fallback: str | None = None
    best_round: int | None = None
    error: str | None = None  # why the task did not run or failed

    @property
    def win_beyond_iqr(self) -> bool:
        """Correct and faster than eager beyond both sides' IQRs."""
        vs = self.remeasured.vs_eager if self.remeasured else None
        return self.correct and vs is not None and vs.beyond_iqr and vs.speedup > 1.0

    @property
    def kept_speedup(self) -> float:
        """What a user of the batch gets: the kernel's speedup when it is correct and
        faster than eager, else 1.0 (the reference is kept)."""
        if not self.correct or self.best_speedup is None:
            return 1.0
        return max(self.best_speedup, 1.0)

    @property
    def speedup_vs_compile(self) -> float | None:
        vs = self.remeasured.vs_compile if self.remeasured else None
        return vs.speedup if self.correct and vs is not None else None

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
    """One task id per reference: its file stem made safe with no hash suffix
    (`plain_task_id`: `12_Matmul_with_diagonal_matrices_.py` ->
    `12_Matmul_with_diagonal_matrices`), with `-2`, `-3`, ... for an id seen before
    (`a/relu.py` and `b/relu.py`), so events and trace files never mix two tasks."""
    taken: set[str] = set()
    ids: list[str] = []
    for path in paths:
        base = plain_task_id(path.stem)
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


def fast_p_point(outcomes: list[TaskOutcome], p: float) -> float:
    """KernelBench's fast_p on the point estimate: correct and speedup > p, over all tasks."""
    if not outcomes:
        return 0.0
    hits = sum(
        1 for o in outcomes if o.correct and o.best_speedup is not None and o.best_speedup > p
    )
    return hits / len(outcomes)


def fast_p(outcomes: list[TaskOutcome], p: float) -> float:
    """The headline fast_p: as `fast_p_point`, but for p >= 1 a task counts only when its
    re-measured win over eager also lies beyond both sides' IQRs."""
    if not outcomes:
        return 0.0
    if p < 1.0:
        return fast_p_point(outcomes, p)
    hits = sum(
        1
        for o in outcomes
        if o.win_beyond_iqr and o.best_speedup is not None and o.best_speedup > p
    )
    return hits / len(outcomes)


def summarize(outcomes: list[TaskOutcome]) -> dict[str, Any]:
    correct = [o.best_speedup for o in outcomes if o.correct and o.best_speedup is not None]
    everyone = [o.kept_speedup for o in outcomes]
    vs_compile = [v for o in outcomes if (v := o.speedup_vs_compile) is not None]
    compile_wins = [
        o
        for o in outcomes
        if o.speedup_vs_compile is not None
        and o.remeasured is not None
        and o.remeasured.vs_compile is not None
        and o.remeasured.vs_compile.beyond_iqr
    ]
    wins = sum(1 for o in outcomes if o.win_beyond_iqr)
    searched = [
        o.search_best_speedup for o in outcomes if o.correct and o.search_best_speedup is not None
    ]
    total = len(outcomes)
    metrics: dict[str, Any] = {
        "tasks": total,
        "correct_tasks": len(correct),
        "correctness_rate": len(correct) / total if outcomes else 0.0,
        "mean_speedup": sum(correct) / len(correct) if correct else None,
        "geomean_speedup": geomean(correct),
        "geomean_speedup_all": geomean(everyone),
        "wins_beyond_iqr": wins,
        "fast_1_beyond_iqr": wins / total if outcomes else 0.0,
        "compile_measured_tasks": len(vs_compile),
        "geomean_speedup_vs_compile": geomean(vs_compile),
        "fast_1_vs_compile": (
            sum(1 for o in compile_wins if (o.speedup_vs_compile or 0.0) > 1.0) / total
            if outcomes
            else 0.0
        ),
        "fast_1_vs_compile_point": (
            sum(1 for v in vs_compile if v > 1.0) / total if outcomes else 0.0
        ),
        "wins_beyond_iqr_vs_compile": len(compile_wins),
        "search_geomean_speedup": geomean(searched),
        "baseline_nodes": sum(o.baseline_nodes for o in outcomes),
        "llm_calls": sum(o.llm_calls for o in outcomes),
        "agent_calls": sum(o.agent_calls for o in outcomes),
    }
    for p in FAST_P_THRESHOLDS:
        metrics[f"fast_{p:g}"] = fast_p(outcomes, p)
        metrics[f"fast_{p:g}_point"] = fast_p_point(outcomes, p)
    return metrics


def outcome_from_summary(task: str, reference: str, summary: TaskSummary) -> TaskOutcome:
    return TaskOutcome(
        task=task,
        reference=reference,
        task_dir=summary.task_dir,
        correct=summary.correct,
        best_speedup=summary.best_speedup,
        search_best_speedup=summary.search_best_speedup,
        remeasured=summary.remeasured,
        nodes=summary.nodes,
        correct_nodes=summary.correct_nodes,
        baseline_nodes=summary.baseline_nodes,
        llm_calls=summary.llm_calls,
        agent_calls=summary.agent_calls,
        agent_fallback=summary.agent_fallback,
        best_round=summary.best_round,
    )
