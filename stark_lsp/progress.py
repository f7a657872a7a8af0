"""`window/workDoneProgress` per job, when the client supports it: begin when
the job is queued, a report per change ("round 3/10 · best so far 1.84x (search
figure) · 2 buggy",
with a percentage), end when it stops. Cancellable: the client's cancel maps
back to the job through the token."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lsprotocol import types

from stark_lsp.job import Job, JobKind, JobState

log = logging.getLogger(__name__)


def progress_message(job: Job) -> str:
    """One line a person reads in a status bar."""
    if job.state is JobState.QUEUED:
        return "queued"
    if job.kind is not JobKind.OPTIMIZE and job.state is JobState.RUNNING:
        return "running the debug agent" if job.kind is JobKind.DEBUG else "verifying"
    parts: list[str] = []
    if job.kind is JobKind.OPTIMIZE:
        shown = job.round if job.state is not JobState.RUNNING else min(job.round + 1, job.rounds)
        parts.append(f"round {shown}/{job.rounds}" if job.rounds else "starting")
        best = job.best
        if best is not None:
            parts.append(best.short())
        parts.append(f"{job.buggy} buggy")
    if job.state is JobState.DONE and job.kind is not JobKind.OPTIMIZE and job.verdict:
        verdict = job.verdict
        if verdict.correct and verdict.speedup:
            parts.append(f"correct, {verdict.speedup:.2f}x")
        else:
            parts.append(verdict.error or "failed")
    if job.state in (JobState.FAILED, JobState.CANCELLED):
        parts.append(f"{job.state}: {job.error}" if job.error else str(job.state))
    elif job.state is JobState.DONE:
        parts.append("done")
    return " · ".join(parts)


def percentage(job: Job) -> int:
    if job.state in (JobState.DONE, JobState.FAILED, JobState.CANCELLED):
        return 100
    if job.kind is JobKind.OPTIMIZE and job.rounds:
        return max(0, min(99, int(100 * job.round / job.rounds)))
    return 0


class _JobProgress:
    """Orders begin/report/end for one token even though `create` is a round trip."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.ready = False
        self.broken = False
        self.pending: Job | None = None
        self.ended = False


class ProgressTracker:
    def __init__(self, server: Any, cancel: Callable[[str], None]) -> None:
        self._server = server
        self._cancel = cancel
        self._by_job: dict[str, _JobProgress] = {}
        self._job_by_token: dict[str, str] = {}

    def supported(self) -> bool:
        caps = self._server.client_capabilities
        window = getattr(caps, "window", None) if caps else None
        return bool(window and window.work_done_progress)

    def token_for(self, job_id: str) -> str:
        return f"stark/{job_id}"

    def update(self, job: Job) -> None:
        """Called on every job change; never blocks."""
        if not self.supported():
            return
        state = self._by_job.get(job.id)
        if state is None:
            state = _JobProgress(self.token_for(job.id))
            self._by_job[job.id] = state
            self._job_by_token[state.token] = job.id
            state.pending = job
            self._server.background.spawn(self._begin(state, job), f"progress of {job.id}")
            return
        if state.broken or state.ended:
            return
        if not state.ready:
            state.pending = job
            return
        self._send(state, job)

    async def _begin(self, state: _JobProgress, job: Job) -> None:
        progress = self._server.work_done_progress
        try:
            await progress.create_async(state.token)
        except Exception as exc:  # noqa: BLE001 - a client that refuses progress still gets jobs
            log.warning("client refused progress token %s: %s", state.token, exc)
            state.broken = True
            return
        name = Path(job.kernel or job.reference).name
        progress.begin(
            state.token,
            types.WorkDoneProgressBegin(
                title=f"STARK {job.kind} {name}",
                cancellable=True,
                message=progress_message(job),
                percentage=percentage(job),
            ),
        )
        state.ready = True
        latest = state.pending
        state.pending = None
        if latest is not None:
            self._send(state, latest)

    def _send(self, state: _JobProgress, job: Job) -> None:
        progress = self._server.work_done_progress
        if job.active:
            progress.report(
                state.token,
                types.WorkDoneProgressReport(
                    message=progress_message(job), percentage=percentage(job), cancellable=True
                ),
            )
            return
        state.ended = True
        progress.end(state.token, types.WorkDoneProgressEnd(message=progress_message(job)))
        progress.tokens.pop(state.token, None)

    def on_client_cancel(self, token: Any) -> None:
        job_id = self._job_by_token.get(str(token))
        if job_id is not None:
            self._cancel(job_id)
