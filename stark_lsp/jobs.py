"""Engine jobs: each one is a `python -m engine.cli ...` subprocess in its own
session. The manager queues jobs beyond `max_concurrent`, keeps one active job
per key (the reference for an optimization, the kernel for a verification),
turns the subprocess's output into job state, and cancels by killing the whole
process tree. A process that exits without its final answer is a failed job
with a message that says so."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from engine.artifacts.remeasured import Remeasured
from engine.bench.result import EvalResult
from engine.events import (
    BestImproved,
    Event,
    NodeBenchmarked,
    NodeSnapshot,
    RoundFinished,
    TaskFailed,
    TaskFinished,
    TaskStarted,
    event_from_dict,
)
from stark_lsp import procs
from stark_lsp.best import BestFigure, best_figure, parse_remeasured
from stark_lsp.eventcheck import check_event

log = logging.getLogger(__name__)

STDERR_TAIL_LINES = 200
STREAM_LIMIT = 32 * 1024 * 1024  # one event line may carry a long log tail
READ_GRACE_S = 5.0


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


UpdateListener = Callable[[Job, Event | None], None]


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


def _last_json_object(text: str) -> dict[str, Any] | None:
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


class JobManager:
    """Owns every job of the session; all methods run on the server's event loop."""

    def __init__(self, max_concurrent: int, listener: UpdateListener) -> None:
        self.max_concurrent = max_concurrent
        self._listener = listener
        self._jobs: dict[str, Job] = {}
        self._queue: deque[Job] = deque()
        self._running: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)

    # -- queries --------------------------------------------------------------
    def new_id(self) -> str:
        return f"job-{next(self._ids)}"

    def get(self, job_id: Any) -> Job:
        if not isinstance(job_id, str) or not job_id:
            raise JobError(f"jobId must be a non-empty string, not {job_id!r}")
        job = self._jobs.get(job_id)
        if job is None:
            known = ", ".join(list(self._jobs)[-5:]) or "none"
            raise JobError(f"unknown jobId {job_id!r} (known: {known})")
        return job

    def jobs(self) -> list[Job]:
        return list(self._jobs.values())

    def active_for(self, key: str) -> Job | None:
        for job in self._jobs.values():
            if job.key == key and job.active:
                return job
        return None

    def latest(self, predicate: Callable[[Job], bool]) -> Job | None:
        for job in reversed(list(self._jobs.values())):
            if predicate(job):
                return job
        return None

    # -- lifecycle --------------------------------------------------------------
    def set_max_concurrent(self, value: int) -> None:
        self.max_concurrent = max(1, value)
        self._pump()

    async def submit(self, job: Job, replace: bool = False) -> Job:
        """Queue a job. With `replace`, an active job on the same key is cancelled first;
        without it, that job is an error the user sees."""
        existing = self.active_for(job.key)
        if existing is not None:
            if not replace:
                raise JobError(
                    f"{existing.id} is already {existing.state} for {Path(job.key).name}; "
                    f"cancel it first (stark.cancel {{jobId: {existing.id!r}}})"
                )
            await self.cancel(existing.id)
        self._jobs[job.id] = job
        self._queue.append(job)
        self._notify(job, None)
        self._pump()
        return job

    async def cancel(self, job_id: Any) -> Job:
        job = self.get(job_id)
        if not job.active:
            raise JobError(f"{job.id} is already {job.state}; nothing to cancel")
        job.cancel_requested = True
        if job.state is JobState.QUEUED:
            with contextlib.suppress(ValueError):
                self._queue.remove(job)
            self._finish(job, JobState.CANCELLED, "cancelled before it started")
            return job
        if job.process is not None:
            await procs.stop_tree(job.process)
        await job.done.wait()
        return job

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        job = self.get(job_id)
        await asyncio.wait_for(job.done.wait(), timeout)
        return job

    async def shutdown(self) -> None:
        """Cancel everything (server shutdown)."""
        for job in list(self._jobs.values()):
            if job.active:
                with contextlib.suppress(JobError):
                    await self.cancel(job.id)

    def kill_all_now(self) -> None:
        """Synchronous last resort when the loop is gone (client vanished)."""
        for job in self._jobs.values():
            if job.process is not None and job.process.returncode is None:
                procs.kill_tree_now(job.process.pid)

    # -- internals --------------------------------------------------------------
    def _notify(self, job: Job, event: Event | None) -> None:
        try:
            self._listener(job, event)
        except Exception:  # noqa: BLE001 - a broken listener must not break the job
            log.exception("job listener failed for %s", job.id)

    def _finish(self, job: Job, state: JobState, error: str | None = None) -> None:
        job.state = state
        if error and not job.error:
            job.error = error
        job.finished_at = time.time()
        job.process = None
        self._running.discard(job.id)
        job.done.set()
        self._notify(job, None)
        self._pump()

    def _pump(self) -> None:
        while self._queue and len(self._running) < self.max_concurrent:
            job = self._queue.popleft()
            self._running.add(job.id)
            task = asyncio.ensure_future(self._run(job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, job: Job) -> None:
        job.state = JobState.RUNNING
        job.started_at = time.time()
        self._notify(job, None)
        try:
            await self._run_process(job)
        except Exception as exc:  # noqa: BLE001 - any surprise fails this job, not the server
            log.exception("job %s crashed", job.id)
            if job.process is not None:
                procs.kill_tree_now(job.process.pid)
            self._finish(job, JobState.FAILED, f"internal error while running the job: {exc}")

    async def _drain_stderr(self, job: Job, stream: asyncio.StreamReader) -> None:
        while True:
            line = await stream.readline()
            if not line:
                return
            job.stderr_tail.append(line.decode("utf-8", errors="replace").rstrip("\n"))

    async def _run_process(self, job: Job) -> None:
        try:
            process = await asyncio.create_subprocess_exec(
                *job.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=job.env,
                cwd=job.cwd,
                start_new_session=True,
                limit=STREAM_LIMIT,
            )
        except OSError as exc:
            self._finish(job, JobState.FAILED, f"could not start the engine ({job.argv[0]}): {exc}")
            return
        job.process = process
        job.pid = process.pid
        assert process.stdout is not None and process.stderr is not None
        stderr_task = asyncio.ensure_future(self._drain_stderr(job, process.stderr))
        if job.cancel_requested:  # cancelled while starting
            await procs.stop_tree(process)
        if job.kind is JobKind.OPTIMIZE:
            reader = asyncio.ensure_future(self._read_events(job, process.stdout))
        else:
            reader = asyncio.ensure_future(process.stdout.read())
        returncode = await process.wait()
        # A stray grandchild could keep the pipes open: drain briefly, never hang on them.
        stdout_bytes = b""
        try:
            stdout_bytes = await asyncio.wait_for(reader, READ_GRACE_S) or b""
        except TimeoutError:
            log.warning("job %s: output pipe still open after the engine exited", job.id)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(stderr_task, READ_GRACE_S)
        stdout_text = stdout_bytes.decode("utf-8", errors="replace") if stdout_bytes else ""
        self._conclude(job, returncode, stdout_text)

    async def _read_events(self, job: Job, stream: asyncio.StreamReader) -> bytes:
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line beyond the limit: skip it, keep reading
                continue
            if not raw:
                return b""
            text = raw.decode("utf-8", errors="replace").strip()
            if not text.startswith("{"):
                continue  # stray output is not an event
            try:
                event = event_from_dict(json.loads(text))
                check_event(event)
                apply_event(job, event)
            except Exception as exc:  # noqa: BLE001 - one bad line must not end the job
                self._skip_bad_line(job, exc, text)
                continue
            self._notify(job, event)

    def _skip_bad_line(self, job: Job, exc: Exception, text: str) -> None:
        """Log the first unreadable event line of a job; count the rest (a broken engine
        could print thousands)."""
        job.bad_event_lines += 1
        if job.bad_event_lines == 1:
            log.warning(
                "job %s: skipped an unreadable event line (%s: %s): %.200s"
                " (further ones are only counted)",
                job.id,
                type(exc).__name__,
                exc,
                text,
            )
        else:
            log.debug("job %s: skipped another unreadable event line: %.200s", job.id, text)

    def _conclude(self, job: Job, returncode: int, stdout_text: str) -> None:
        if job.bad_event_lines > 1:
            log.info("job %s: %d event lines were skipped", job.id, job.bad_event_lines)
        if job.cancel_requested:
            self._finish(job, JobState.CANCELLED, "cancelled")
            return
        why = job.stderr_summary()
        exit_text = (
            f"killed by signal {-returncode}"
            if returncode < 0
            else f"exited with status {returncode}"
        )
        if job.kind is JobKind.OPTIMIZE:
            if not job.final_event_seen:
                self._finish(
                    job,
                    JobState.FAILED,
                    f"engine {exit_text} before finishing the task" + (f": {why}" if why else ""),
                )
            elif job.error:
                self._finish(job, JobState.FAILED, job.error)
            else:
                self._finish(job, JobState.DONE)
            return
        data = _last_json_object(stdout_text)
        if data is None:
            self._finish(
                job,
                JobState.FAILED,
                f"engine {exit_text} without a JSON verdict" + (f": {why}" if why else ""),
            )
            return
        try:
            if job.kind is JobKind.VERIFY:
                job.verdict = EvalResult.from_dict(data)
            else:
                job.debug = parse_debug_output(data)
                job.verdict = job.debug.original
        except (TypeError, ValueError) as exc:
            self._finish(job, JobState.FAILED, f"engine answer not understood: {exc}")
            return
        if job.debug is not None and job.debug.error and not job.debug.fixed_code:
            self._finish(job, JobState.FAILED, f"debug agent: {job.debug.error}")
            return
        self._finish(job, JobState.DONE)
