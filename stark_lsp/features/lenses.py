"""Code lenses on `class Model` (Optimize / running "round 3/10 · best so far 1.84x
(search figure)" — cancel / after the search "best 1.31x vs eager, re-measured
(eager 12.1 ± 0.3 ms → 9.2 ± 0.2 ms) — apply", or a plain label when the re-measured
kernel is within noise or not faster: stark_lsp.best) and `class ModelNew` (verify,
fix, last verdict). They are computed from the document's analysis (cached; a large
document's comes from the worker process) and job state: no I/O."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lsprotocol import types

from engine.artifacts.events import BestImproved, RoundFinished
from stark_lsp import core
from stark_lsp.job import Job, JobKind, JobState
from stark_lsp.progress import progress_message
from stark_lsp.server import StarkLanguageServer
from stark_lsp.tasks import ClassInfo, DocumentKind

log = logging.getLogger(__name__)


def _lens(cls: ClassInfo, title: str, command: str, argument: dict[str, Any]) -> types.CodeLens:
    return types.CodeLens(
        range=types.Range(
            start=types.Position(line=cls.line, character=cls.name_start),
            end=types.Position(line=cls.line, character=cls.name_end),
        ),
        command=types.Command(title=title, command=command, arguments=[argument]),
    )


def _label_lens(cls: ClassInfo, title: str) -> types.CodeLens:
    """A lens that only informs: an empty command id is VS Code's convention for a
    label that cannot be clicked (other clients show the title too)."""
    return types.CodeLens(
        range=types.Range(
            start=types.Position(line=cls.line, character=cls.name_start),
            end=types.Position(line=cls.line, character=cls.name_end),
        ),
        command=types.Command(title=title, command=""),
    )


def reference_lenses(
    ls: StarkLanguageServer, uri: str, cls: ClassInfo, reference: Path
) -> list[types.CodeLens]:
    lenses: list[types.CodeLens] = []
    job = ls.jobs.latest_optimize(reference)
    if job is not None and job.active:
        lenses.append(
            _lens(cls, f"STARK {progress_message(job)} — cancel", core.CANCEL, {"jobId": job.id})
        )
    else:
        lenses.append(_lens(cls, "STARK: Optimize", core.OPTIMIZE, {"uri": uri}))
    best = job.best if job is not None else None
    if job is not None and job.best_kernel is not None and best is not None:
        if best.faster:
            title = f"{best.detailed()} — apply"
            lenses.append(_lens(cls, title, core.APPLY_BEST, {"jobId": job.id}))
        elif not job.active:  # the running lens already says "best so far"
            lenses.append(_label_lens(cls, best.detailed()))
    return lenses


def kernel_lenses(
    ls: StarkLanguageServer, uri: str, cls: ClassInfo, kernel: Path
) -> list[types.CodeLens]:
    lenses: list[types.CodeLens] = []
    active = ls.jobs.latest(lambda j: j.kernel == kernel and j.active)
    if active is not None:
        lenses.append(
            _lens(
                cls,
                f"STARK {active.kind}: {progress_message(active)} — cancel",
                core.CANCEL,
                {"jobId": active.id},
            )
        )
        return lenses
    verdict = ls.verdicts.get(kernel)
    if verdict is None:
        lenses.append(_lens(cls, "STARK: Verify", core.VERIFY, {"uri": uri}))
        return lenses
    result = verdict.result
    if result.correct:
        speed = f"{result.speedup:.2f}x" if result.speedup else "correct"
        lenses.append(_lens(cls, f"STARK: {speed} ✓ — verify again", core.VERIFY, {"uri": uri}))
    else:
        lenses.append(
            _lens(
                cls,
                f"STARK: {result.stage or 'failed'} ✗ — verify again",
                core.VERIFY,
                {"uri": uri},
            )
        )
        lenses.append(_lens(cls, "Fix with STARK debug agent", core.DEBUG, {"uri": uri}))
    fix = ls.jobs.latest(lambda j: j.kind is JobKind.DEBUG and j.kernel == kernel)
    if fix is not None and fix.state is JobState.DONE and fix.debug and fix.debug.fixed_code:
        lenses.append(_lens(cls, "apply STARK fix", core.APPLY_FIX, {"jobId": fix.id}))
    return lenses


async def code_lenses(ls: StarkLanguageServer, uri: str) -> list[types.CodeLens]:
    found = await ls.file_analysis(uri)
    if found is None:
        return []
    analysis, path = found
    info = analysis.info
    lenses: list[types.CodeLens] = []
    is_reference = info.kind is DocumentKind.REFERENCE or (
        analysis.lookup is not None and analysis.lookup.how == "same-file"
    )
    if info.model is not None and is_reference:
        lenses += reference_lenses(ls, uri, info.model, path)
    if info.model_new is not None:
        lenses += kernel_lenses(ls, uri, info.model_new, path)
    return lenses


def refresh_after(server: StarkLanguageServer, job: Job, event: Any) -> None:
    """Job listener: ask the client to re-request lenses when what they show changed
    (a job started or ended, a round finished, the best improved)."""
    if not job.active or event is None or isinstance(event, RoundFinished | BestImproved):
        refresh(server)


def refresh(server: StarkLanguageServer) -> None:
    caps = server.client_capabilities
    workspace = getattr(caps, "workspace", None) if caps else None
    lens = getattr(workspace, "code_lens", None) if workspace else None
    if lens is None or not lens.refresh_support:
        return

    async def send() -> None:
        try:
            await server.workspace_code_lens_refresh_async(None)
        except Exception as exc:  # noqa: BLE001 - a refresh is a courtesy
            log.debug("codeLens refresh failed: %s", exc)

    server.background.spawn(send(), "codeLens refresh")


def register(server: StarkLanguageServer) -> None:
    server.job_listeners.append(lambda job, event: refresh_after(server, job, event))

    @server.feature(types.TEXT_DOCUMENT_CODE_LENS, types.CodeLensOptions(resolve_provider=False))
    async def on_code_lens(
        ls: StarkLanguageServer, params: types.CodeLensParams
    ) -> list[types.CodeLens]:
        return await code_lenses(ls, params.text_document.uri)
