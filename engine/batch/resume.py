"""`stark batch --resume RUN_DIR`: which tasks of a saved batch are finished and which still
have to run.

A task is finished when its directory holds a final summary.json and its tree.json says
`finished`: its outcome is read back, never rerun. Every other task runs: one with a
tree.json resumes at its first round without a node (`task.run_task`), one without starts
afresh (it died before its seed node, never started, or its reference was refused, which a
second try reports again in seconds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.artifacts.summary import TaskSummary
from engine.artifacts.taskdir import TaskDir
from engine.batch.metrics import TaskOutcome, outcome_from_summary
from engine.batch.plan import BatchPlan, BatchTask


@dataclass(slots=True)
class ResumePoint:
    plan: BatchPlan
    finished: dict[int, tuple[TaskOutcome, TaskSummary]] = field(default_factory=dict)
    to_run: list[BatchTask] = field(default_factory=list)
    to_continue: int = 0  # of to_run: the tasks that resume from a tree.json


def finished_summary(plan: BatchPlan, task: BatchTask) -> TaskSummary | None:
    """The task's final summary, or None when it is not finished (or unreadable)."""
    directory = TaskDir(plan.task_dir(task), task.task_id)
    try:
        state = directory.load_state()
        summary = directory.load_summary()
    except (OSError, ValueError):
        return None
    if not state or not state.get("finished") or summary is None:
        return None
    return summary


def resume_point(run_dir: str) -> ResumePoint:
    """Raises BatchPlanError when RUN_DIR is not a batch."""
    plan = BatchPlan.load(Path(run_dir))
    point = ResumePoint(plan)
    for task in plan.tasks:
        summary = finished_summary(plan, task)
        if summary is not None:
            outcome = outcome_from_summary(task.name, task.reference, summary)
            point.finished[task.index] = (outcome, summary)
            continue
        point.to_run.append(task)
        if TaskDir(plan.task_dir(task), task.task_id).state_path.exists():
            point.to_continue += 1
    return point
