"""The batch driver: turns the plan's tasks into jobs, hands them to a runner (this process,
local worker processes, or Ray), and records each outcome as it arrives, rewriting
summary.json (the per-task results in task order, and the KernelBench metrics) atomically
after every task. Only the driver writes summary.json; workers write their task directories.

A reference that cannot be read is that task's outcome at once; a bad reference or a failed
search is recorded by the worker; a dead worker by its runner. Nothing stops the batch.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from engine.artifacts.events import Event, EventSink, TaskFinished
from engine.artifacts.summary import TaskSummary
from engine.artifacts.taskdir import atomic_write_text
from engine.batch.agent_spec import AgentSpec
from engine.batch.metrics import TaskOutcome, summarize
from engine.batch.plan import SUMMARY_FILE, BatchPlan, BatchTask
from engine.batch.task import TaskJob
from engine.search.reference import ReferenceError_, read_reference

Record = Callable[[TaskJob, TaskOutcome], None]


class Runner(Protocol):
    def run(self, jobs: list[TaskJob], record: Record) -> None: ...


@dataclass(frozen=True, slots=True)
class Execution:
    """Where the tasks run: this process (workers=1), N local workers, or a Ray cluster."""

    workers: int = 1
    ray_address: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"workers": None if self.ray_address else self.workers, "ray": self.ray_address}


@dataclass(slots=True)
class BatchResult:
    """The tasks' outcomes, in task order, and the summary written to summary.json."""

    outcomes: list[TaskOutcome]
    summary: dict[str, Any]


class LockedSink:
    """Events reach the sinks from the driver and from the relay thread: one at a time."""

    def __init__(self, sink: EventSink) -> None:
        self._sink = sink
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._sink(event)


class BatchDriver:
    def __init__(
        self,
        plan: BatchPlan,
        agent: AgentSpec,
        execution: Execution,
        events: EventSink | None = None,
        on_outcome: Callable[[TaskOutcome], None] | None = None,
    ) -> None:
        self.plan = plan
        self.agent = agent
        self.execution = execution
        self.sink = LockedSink(events or (lambda _event: None))
        self.on_outcome = on_outcome
        self.outcomes: dict[int, TaskOutcome] = {}

    # --- the run --------------------------------------------------------------------------

    def run(
        self,
        tasks: list[BatchTask] | None = None,
        finished: dict[int, tuple[TaskOutcome, TaskSummary]] | None = None,
    ) -> BatchResult:
        """Run `tasks` (default: all) after taking the outcomes of `finished` ones as they
        are (a resume): their saved summaries go to the event sinks as task_finished."""
        for index, (outcome, summary) in sorted((finished or {}).items()):
            self.outcomes[index] = outcome
            self.sink(
                TaskFinished(task_id=self.plan.tasks[index].task_id, summary=summary.to_dict())
            )
        self.write_summary()
        jobs = []
        for task in self.plan.tasks if tasks is None else tasks:
            job = self._job(task)
            if job is not None:
                jobs.append(job)
        if jobs:
            self._runner().run(jobs, self._record)
        return BatchResult(self.ordered(), self.write_summary())

    def _job(self, task: BatchTask) -> TaskJob | None:
        """The task's job, or None after recording why its reference cannot be read."""
        try:
            source = read_reference(Path(task.reference))
        except ReferenceError_ as exc:
            self._record_outcome(
                task.index,
                TaskOutcome(task.name, task.reference, None, False, None, error=str(exc)),
            )
            return None
        return TaskJob(
            task=task,
            reference_src=source,
            run_dir=str(self.plan.run_dir),
            config=self.plan.config,
            device=self.plan.device,
            agent=self.agent,
            timeout_s=self.plan.timeout_s,
        )

    def _runner(self) -> Runner:
        cache_key = secrets.token_bytes(32)  # the workers' compile-cache peer key, in memory
        if self.execution.ray_address:
            from engine.batch.ray_runner import RayRunner

            return RayRunner(self.execution.ray_address, self.sink, cache_key, self.plan.device)
        if self.execution.workers > 1:
            from engine.batch.local_workers import LocalWorkers
            from engine.batch.placement import plan_slots

            slots = plan_slots(self.execution.workers, self.plan.device)
            return LocalWorkers(slots, self.sink, cache_key)
        from engine.batch.in_process import InProcess

        return InProcess(self.sink)

    def _record(self, job: TaskJob, outcome: TaskOutcome) -> None:
        self._record_outcome(job.task.index, outcome)

    def _record_outcome(self, index: int, outcome: TaskOutcome) -> None:
        self.outcomes[index] = outcome
        self.write_summary()
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    # --- summary.json -----------------------------------------------------------------------

    def ordered(self) -> list[TaskOutcome]:
        return [self.outcomes[i] for i in sorted(self.outcomes)]

    def write_summary(self) -> dict[str, Any]:
        outcomes = self.ordered()
        summary = {
            **self.plan.header(),
            "execution": self.execution.describe(),
            "tasks_pending": len(self.plan.tasks) - len(outcomes),
            "tasks": [o.to_dict() for o in outcomes],
            "metrics": summarize(outcomes),
        }
        text = json.dumps(summary, indent=2, default=str)
        atomic_write_text(self.plan.run_dir / SUMMARY_FILE, text)
        return summary
