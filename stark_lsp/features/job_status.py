"""What the client hears about jobs: the `stark/jobUpdated` notification on every
change (stark_lsp.notifications), `$/progress` (stark_lsp.progress), and a message
when a job fails or an optimization finishes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lsprotocol import types

from stark_lsp import notifications
from stark_lsp.job import Job, JobKind, JobState
from stark_lsp.server import StarkLanguageServer


def report(server: StarkLanguageServer, job: Job, event: Any) -> None:
    """Job listener: notify, update the progress, announce the end."""
    server.protocol.notify(notifications.JOB_UPDATED, notifications.job_payload(job))
    server.progress.update(job)
    if not job.active:
        announce(server, job)


def announce(server: StarkLanguageServer, job: Job) -> None:
    name = Path(job.kernel or job.reference).name
    if job.state is JobState.FAILED:
        server.window_show_message(
            types.ShowMessageParams(
                type=types.MessageType.Error,
                message=f"STARK {job.kind} {name} failed: {job.error}",
            )
        )
    elif job.state is JobState.DONE and job.kind is JobKind.OPTIMIZE:
        best = job.best.short() if job.best is not None else "no correct kernel"
        server.window_log_message(
            types.LogMessageParams(
                type=types.MessageType.Info,
                message=f"STARK optimize {name} done: {best} ({job.id})",
            )
        )


def register(server: StarkLanguageServer) -> None:
    server.job_listeners.append(lambda job, event: report(server, job, event))
