"""`stark batch` with one worker: every task in this process, one after another, with one
Benchmarker (warm fork server) and one agent for the whole batch, events straight to the
sinks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from engine.artifacts.events import EventSink
from engine.batch.metrics import TaskOutcome
from engine.batch.task import TaskJob, run_task

Record = Callable[[TaskJob, TaskOutcome], None]


@dataclass(slots=True)
class InProcess:
    sink: EventSink

    def run(self, jobs: list[TaskJob], record: Record) -> None:
        if not jobs:
            return
        from engine.bench import Benchmarker

        setup = jobs[0].agent.build()
        with Benchmarker() as benchmarker:
            for job in jobs:
                record(job, run_task(job, benchmarker, self.sink, setup))
