"""Engine jobs: each one is a `python -m engine.cli ...` subprocess in its own
session. The manager queues jobs beyond `max_concurrent`, keeps one active job
per key (the reference for an optimization, the kernel for a verification),
turns the subprocess's output into job state (stark_lsp.job), and cancels by
killing the whole process tree. A process that exits without its final answer is
a failed job with a message that says so."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.artifacts.events import Event, event_from_dict
from engine.bench.result import EvalResult
from stark_lsp import procs
from stark_lsp.eventcheck import check_event
from stark_lsp.job import (
    Job,
    JobError,
    JobKind,
    JobState,
    apply_event,
    last_json_object,
    parse_debug_output,
)

log = logging.getLogger(__name__)

STREAM_LIMIT = 32 * 1024 * 1024  # one event line may carry a long log tail
READ_GRACE_S = 5.0

UpdateListener = Callable[[Job, Event | None], None]


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

    def latest_optimize(self, reference: Path) -> Job | None:
        """The newest optimization of `reference`, running or finished."""
        return self.latest(lambda j: j.kind is JobKind.OPTIMIZE and j.reference == reference)

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
        data = last_json_object(stdout_text)
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
