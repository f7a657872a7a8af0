"""One engine job's record: what was asked (kind, files, command line), and the state
its engine events and final JSON answer build up (apply_event, parse_debug_output).
The JobManager (stark_lsp.jobs) runs the subprocess; this module never does I/O."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from engine.artifacts.events import (
    BestImproved,
    Event,
    NodeBenchmarked,
    NodeSnapshot,
    RoundFinished,
    TaskFailed,
    TaskFinished,
    TaskStarted,
)
from engine.artifacts.remeasured import Remeasured
from engine.bench.result import EvalResult
from stark_lsp.best import BestFigure, best_figure, parse_remeasured

STDERR_TAIL_LINES = 200


class JobKind(StrEnum):
    OPTIMIZE = "optimize"
    VERIFY = "verify"
    DEBUG = "debug"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_STATES = (JobState.QUEUED, JobState.RUNNING)


class JobError(Exception):
    """A job request that cannot be honoured; the message is for the user."""


@dataclass(slots=True)
class NodeResult:
    """The verdict of one node, with where its code and trace live."""

    result: EvalResult
    code_path: Path | None
    trace_files: list[Path] = field(default_factory=list)


@dataclass(slots=True)
class DebugOutcome:
    original: EvalResult | None
    fixed_code: str | None
    fixed: EvalResult | None
    error: str | None


@dataclass(eq=False)
class Job:
    id: str
    kind: JobKind
    uri: str  # the document the user acted on
    key: str  # at most one active job per key
    reference: Path
    kernel: Path | None
    argv: list[str]
    env: dict[str, str] | None = None
    cwd: str | None = None
    rounds: int = 0
    origin: str = "command"  # command | watch
    device: str = "auto"
    artifacts: list[Path] = field(default_factory=list)  # log/verify script written for it
    state: JobState = JobState.QUEUED
    round: int = 0  # rounds finished
    best_speedup: float | None = None  # the engine's latest figure (see `best`)
    search_best_speedup: float | None = None  # the search's own figure
    remeasured: Remeasured | None = None  # task_finished's fresh measurement
    remeasure_reported: bool = False  # the summary had `remeasured` (a newer engine)
    best_kernel: Path | None = None
    best_node: int | None = None
    task_dir: Path | None = None
    error: str | None = None
    nodes: dict[int, NodeSnapshot] = field(default_factory=dict)
    results: dict[int, NodeResult] = field(default_factory=dict)
    verdict: EvalResult | None = None
    debug: DebugOutcome | None = None
    summary: dict[str, Any] | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    pid: int | None = None
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)
    cancel_requested: bool = False
    final_event_seen: bool = False
    bad_event_lines: int = 0  # event lines skipped as unreadable
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_TAIL_LINES))
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def buggy(self) -> int:
        return sum(1 for n in self.nodes.values() if n.buggy)

    @property
    def tree(self) -> list[NodeSnapshot]:
        return [self.nodes[k] for k in sorted(self.nodes)]

    @property
    def best(self) -> BestFigure | None:
        """What to show for the best kernel: provisional during the search, the fresh
        re-measurement after it (stark_lsp.best)."""
        return best_figure(
            running_speedup=self.best_speedup if not self.final_event_seen else None,
            search_speedup=self.search_best_speedup,
            final=self.final_event_seen,
            reported_remeasure=self.remeasure_reported,
            final_speedup=self.best_speedup,
            remeasured=self.remeasured,
        )

    def resolve(self, path: str | None) -> Path | None:
        """Engine paths may be relative to the task directory."""
        if not path:
            return None
        candidate = Path(path)
        if not candidate.is_absolute() and self.task_dir is not None:
            candidate = self.task_dir / candidate
        return candidate

    def stderr_summary(self) -> str:
        lines = [line for line in self.stderr_tail if line.strip()]
        return lines[-1].strip() if lines else ""


def apply_event(job: Job, event: Event) -> None:
    """Fold one engine event into the job's state."""
    if isinstance(event, TaskStarted):
        job.task_dir = Path(event.task_dir)
        job.rounds = event.rounds or job.rounds
    elif isinstance(event, NodeBenchmarked):
        # `result: {}` means the node never reached the benchmarker (docs/events.md)
        result = (
            EvalResult.from_dict(event.result)
            if event.result
            else EvalResult(error=event.node.error or "not benchmarked", stage="agent")
        )
        job.nodes[event.node.id] = event.node
        job.results[event.node.id] = NodeResult(
            result=result,
            code_path=job.resolve(event.node.code_path),
            trace_files=[p for p in (job.resolve(t) for t in event.trace_files) if p],
        )
    elif isinstance(event, BestImproved):
        job.best_speedup = job.search_best_speedup = event.speedup
        job.best_node = event.node_id
        job.best_kernel = job.resolve(event.code_path)
    elif isinstance(event, RoundFinished):
        job.round = max(job.round, event.round + 1)
        job.rounds = event.rounds or job.rounds
        if event.best_speedup is not None:
            job.best_speedup = job.search_best_speedup = event.best_speedup
        for node in event.tree:
            job.nodes[node.id] = node
    elif isinstance(event, TaskFinished):
        job.final_event_seen = True
        summary = event.summary or {}
        job.summary = summary
        if "remeasured" in summary:  # best_speedup is the fresh figure (or null: failed)
            job.remeasure_reported = True
            job.remeasured = parse_remeasured(summary["remeasured"])
            job.best_speedup = _speedup(summary.get("best_speedup"))
            search = _speedup(summary.get("search_best_speedup"))
            job.search_best_speedup = search if search is not None else job.search_best_speedup
        elif _speedup(summary.get("best_speedup")) is not None:
            job.best_speedup = _speedup(summary.get("best_speedup"))
        if summary.get("task_dir"):
            job.task_dir = Path(summary["task_dir"])
        if summary.get("best_kernel"):
            job.best_kernel = job.resolve(summary["best_kernel"])
        job.round = max(job.round, job.rounds)
    elif isinstance(event, TaskFailed):
        job.final_event_seen = True
        job.error = event.error


def _speedup(value: Any) -> float | None:
    """A summary's speedup field: a finite positive number, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value > 0 else None


def parse_debug_output(data: dict[str, Any]) -> DebugOutcome:
    def result(key: str) -> EvalResult | None:
        value = data.get(key)
        return EvalResult.from_dict(value) if isinstance(value, dict) else None

    fixed_code = data.get("fixed_code")
    return DebugOutcome(
        original=result("original"),
        fixed_code=fixed_code if isinstance(fixed_code, str) else None,
        fixed=result("fixed"),
        error=data.get("error") if isinstance(data.get("error"), str) else None,
    )


def last_json_object(text: str) -> dict[str, Any] | None:
    """The JSON answer of a `--json` command (the last line that parses as an object)."""
    stripped = text.strip()
    if not stripped:
        return None
    with contextlib.suppress(json.JSONDecodeError):
        value = json.loads(stripped)
        return value if isinstance(value, dict) else None
    for line in reversed(stripped.splitlines()):
        with contextlib.suppress(json.JSONDecodeError):
            value = json.loads(line)
            if isinstance(value, dict):
                return value
    return None
