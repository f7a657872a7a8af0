"""`stark batch --workers N`: tasks across N local worker processes.

Each worker is a single-process `ProcessPoolExecutor` (spawn context) of its own, pinned to
its slot (`placement`: a GPU, or a set of CPU cores) by the pool's initializer, with its own
Benchmarker (warm fork server) for every task it runs. One pool per worker rather than one
pool of N: a pool's initializer cannot tell its workers apart (so it cannot hand each its own
GPU or cores), and a worker that dies breaks its whole pool, failing every task in it; here it
fails only the task it was running. That task is run once more in a fresh worker (it resumes
from its tree.json), and becomes that task's error if its worker dies again.

Workers die with the driver (parent-death signal), their benchmarkers' fork servers with them.
Per-task events come back over one multiprocessing queue (`relay`).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.util
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from engine.artifacts.events import EventSink, TaskFailed
from engine.batch.metrics import TaskOutcome
from engine.batch.placement import WorkerSlot, die_with_parent, enter_slot
from engine.batch.relay import EventPump, QueueSink
from engine.batch.task import TaskJob

ATTEMPTS = 2  # a task whose worker died is run once more
Record = Callable[[TaskJob, TaskOutcome], None]


@dataclass(slots=True)
class _WorkerState:
    """What one worker process keeps between tasks."""

    benchmarker: Any
    events: EventSink


_worker: _WorkerState | None = None


def _init_worker(slot: WorkerSlot, events: Any, cache_key: bytes) -> None:
    """Runs first in each worker: die with the driver, take the slot, trust the batch's
    other workers' compile-cache records, start a Benchmarker kept for the worker's life."""
    global _worker
    die_with_parent()
    enter_slot(slot)
    from engine.bench import Benchmarker
    from engine.bench.cache_manifest import share_with_peers

    share_with_peers(cache_key)
    benchmarker = Benchmarker()
    multiprocessing.util.Finalize(benchmarker, benchmarker.close, exitpriority=10)
    _worker = _WorkerState(benchmarker, QueueSink(events))


def _run_in_worker(job: TaskJob) -> TaskOutcome:
    from engine.batch.task import run_task

    assert _worker is not None, "worker not initialised"
    return run_task(job, _worker.benchmarker, _worker.events)


@dataclass(slots=True)
class LocalWorkers:
    """Runs jobs on the given slots; `record` hears of each outcome in the driver thread."""

    slots: list[WorkerSlot]
    sink: EventSink
    cache_key: bytes
    attempts: dict[str, int] = field(default_factory=dict)

    def run(self, jobs: list[TaskJob], record: Record) -> None:
        context = multiprocessing.get_context("spawn")
        events = context.Queue()
        pump = EventPump(lambda timeout: events.get(timeout=timeout), self.sink)
        pools: dict[int, ProcessPoolExecutor] = {}
        running: dict[Future[TaskOutcome], tuple[int, TaskJob]] = {}
        pending = list(jobs)
        try:
            while pending or running:
                for slot in self.slots:
                    busy = any(index == slot.index for index, _ in running.values())
                    if pending and not busy:
                        pool = pools.get(slot.index) or self._pool(context, slot, events)
                        pools[slot.index] = pool
                        job = pending.pop(0)
                        running[pool.submit(_run_in_worker, job)] = (slot.index, job)
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    index, job = running.pop(future)
                    if isinstance(future.exception(), BrokenProcessPool):
                        pools.pop(index).shutdown(wait=False)  # its worker died: a new one
                    outcome = self._outcome(future, job, pending)
                    if outcome is not None:
                        record(job, outcome)
        finally:
            for pool in pools.values():
                pool.shutdown(wait=True, cancel_futures=True)
            pump.stop()
            events.close()

    def _pool(self, context: Any, slot: WorkerSlot, events: Any) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=1,
            mp_context=context,
            initializer=_init_worker,
            initargs=(slot, events, self.cache_key),
        )

    def _outcome(
        self, future: Future[TaskOutcome], job: TaskJob, pending: list[TaskJob]
    ) -> TaskOutcome | None:
        """The job's outcome; None when its worker died and the job was queued again."""
        try:
            return future.result()
        except BrokenProcessPool:
            tries = self.attempts[job.task.name] = self.attempts.get(job.task.name, 0) + 1
            if tries < ATTEMPTS:
                pending.insert(0, job)
                return None
            message = f"its worker process died {tries} times (killed, out of memory, or crashed)"
        except Exception as exc:  # noqa: BLE001 - an internal error in the worker: that task's
            message = f"worker failed: {type(exc).__name__}: {exc}"
        self.sink(TaskFailed(task_id=job.task.task_id, error=message))
        return job.error(message, job.root)
