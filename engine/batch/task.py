"""One task of a batch, as whichever worker gets it runs it: fresh, or resumed from its
tree.json when one exists, so a task a killed worker or driver left half done continues
at its first round without a node, and a finished node is never benchmarked again.

The task holds `run_dir/.locks/<name>.lock` (an flock, dropped by the kernel when its holder
dies) while it runs: two processes never run one task at once, e.g. a resumed batch and a
straggler of the killed one. A bad reference or a failed search is that task's outcome,
never an exception: the batch goes on.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.agents.factory import AgentSetup
from engine.artifacts.events import EventSink
from engine.artifacts.redact import Redactor
from engine.artifacts.taskdir import TaskDir
from engine.batch.agent_spec import AgentSpec
from engine.batch.metrics import TaskOutcome, outcome_from_summary
from engine.batch.plan import BatchTask
from engine.search import SearchConfig, SearchError, StarkSearch
from engine.search.reference import (
    ReferenceError_,
    check_reference_source,
    self_check,
    self_check_config,
)

LOCKS_DIR = ".locks"
LOCK_WAIT_S = 120.0  # a straggler of a killed run dies within seconds (parent-death signal)


class TaskBusy(RuntimeError):
    """Another live process holds the task's lock."""


@dataclass(frozen=True, slots=True)
class TaskJob:
    """One task and everything a worker needs to run it (picklable: it travels to worker
    processes and Ray tasks). The reference's source travels with it, so a worker need not
    see the driver's files, only the run directory."""

    task: BatchTask
    reference_src: str
    run_dir: str
    config: SearchConfig
    device: str
    agent: AgentSpec
    timeout_s: float | None = None  # the reference self-check's limit per phase

    @property
    def root(self) -> Path:
        return Path(self.run_dir) / self.task.name

    def error(self, message: str, task_dir: Path | None = None) -> TaskOutcome:
        """This task's outcome when it could not run (or its search failed)."""
        where = str(task_dir) if task_dir is not None else None
        return TaskOutcome(self.task.name, self.task.reference, where, False, None, error=message)


def run_task(
    job: TaskJob,
    benchmarker: Any,
    events: EventSink | None,
    setup: AgentSetup | None = None,
) -> TaskOutcome:
    """Run the task to its end (fresh or resumed) and return its outcome."""
    setup = setup or job.agent.build()
    try:
        with task_lock(Path(job.run_dir), job.task.name):
            return _run_locked(job, benchmarker, events, setup)
    except TaskBusy as exc:
        return job.error(str(exc))


def _run_locked(
    job: TaskJob, benchmarker: Any, events: EventSink | None, setup: AgentSetup
) -> TaskOutcome:
    task = TaskDir(job.root, job.task.task_id, Redactor(setup.secrets))
    if task.state_path.exists():
        try:
            search = StarkSearch.resume(
                task, agent=setup.agent, benchmarker=benchmarker, events=events
            )
        except (SearchError, KeyError, ValueError) as exc:
            return job.error(f"cannot resume {job.root}: {exc}", job.root)
    else:
        reference = job.task.reference
        try:
            check_reference_source(job.reference_src, reference)
            config = self_check_config(job.device, job.timeout_s)
            self_check(benchmarker, job.reference_src, reference, config)
        except ReferenceError_ as exc:
            return job.error(str(exc))
        search = StarkSearch.for_agent(
            setup,
            task=task,
            reference_src=job.reference_src,
            reference_path=reference,
            config=job.config,
            benchmarker=benchmarker,
            device=job.device,
            events=events,
        )
    try:
        summary = search.run()
    except Exception as exc:  # noqa: BLE001 - the batch goes on; details in the task's log
        return job.error(task.redact(str(exc)), job.root)
    return outcome_from_summary(job.task.name, job.task.reference, summary)


@contextlib.contextmanager
def task_lock(run_dir: Path, name: str, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold the task's lock for the body; TaskBusy after `wait_s` of someone else holding it."""
    locks = run_dir / LOCKS_DIR
    locks.mkdir(parents=True, exist_ok=True)
    path = locks / f"{name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TaskBusy(
                        f"task {name} is being run by another process ({path} is locked); "
                        "not running it twice"
                    ) from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)  # releases the lock
