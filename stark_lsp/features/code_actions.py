"""Code actions: "Fix with STARK debug agent" on a failing kernel's diagnostics,
"Optimize with STARK" on a reference, "Apply best kernel (1.31x vs eager,
re-measured)" when a job's best kernel was re-measured faster than eager beyond the
noise (stark_lsp.best; a provisional, slower or within-noise "best" is not offered),
and the debug agent's proposed fix as an edit to accept."""

from __future__ import annotations

import logging
from typing import Any

from lsprotocol import types

from stark_lsp import core, edits
from stark_lsp.job import Job, JobKind, JobState
from stark_lsp.server import StarkLanguageServer
from stark_lsp.tasks import DocumentKind

log = logging.getLogger(__name__)

KIND_OPTIMIZE = types.CodeActionKind.Source + ".stark.optimize"
KIND_APPLY_BEST = types.CodeActionKind.Source + ".stark.applyBest"


def _wanted(kind: str, only: list[str] | None) -> bool:
    return not only or any(kind == o or kind.startswith(o + ".") for o in only)


async def code_actions(
    ls: StarkLanguageServer, params: types.CodeActionParams
) -> list[types.CodeAction]:
    uri = params.text_document.uri
    found = await ls.file_analysis(uri)
    if found is None:
        return []
    analysis, path = found
    only = list(params.context.only) if params.context.only else None
    actions: list[types.CodeAction] = []
    info = analysis.info
    failing = [
        d
        for d in params.context.diagnostics
        if d.source == "stark" and isinstance(d.data, dict) and d.data.get("failing")
    ]
    if (
        info.kind is DocumentKind.KERNEL
        and failing
        and _wanted(types.CodeActionKind.QuickFix, only)
    ):
        actions.append(
            types.CodeAction(
                title="Fix with STARK debug agent",
                kind=types.CodeActionKind.QuickFix,
                diagnostics=failing,
                command=types.Command(
                    title="Fix with STARK debug agent",
                    command=core.DEBUG,
                    arguments=[{"uri": uri}],
                ),
            )
        )
    if info.kind is DocumentKind.KERNEL and _wanted(types.CodeActionKind.QuickFix, only):
        fix = ls.jobs.latest(lambda j: j.kind is JobKind.DEBUG and j.kernel == path)
        if fix is not None and fix.state is JobState.DONE and fix.debug and fix.debug.fixed_code:
            outcome = fix.debug.fixed
            note = ""
            if outcome is not None:
                note = (
                    f" (now correct, {outcome.speedup:.2f}x)"
                    if outcome.correct and outcome.speedup
                    else " (still failing)"
                    if not outcome.correct
                    else ""
                )
            current = ls.text_of(uri)
            actions.append(
                types.CodeAction(
                    title=f"Apply STARK debug fix{note}",
                    kind=types.CodeActionKind.QuickFix,
                    diagnostics=failing or None,
                    is_preferred=bool(outcome and outcome.correct),
                    edit=edits.replace_edit(
                        uri, current, edits.keep_reference_comment(current, fix.debug.fixed_code)
                    ),
                )
            )
    reference = None
    if info.kind is DocumentKind.REFERENCE:
        reference = path
    elif info.kind is DocumentKind.KERNEL and analysis.lookup and analysis.lookup.path:
        reference = analysis.lookup.path
    if reference is not None:
        job = ls.jobs.latest_optimize(reference)
        if (
            info.kind is DocumentKind.REFERENCE
            and _wanted(KIND_OPTIMIZE, only)
            and not (job and job.active)
        ):
            actions.append(
                types.CodeAction(
                    title="Optimize with STARK",
                    kind=KIND_OPTIMIZE,
                    command=types.Command(
                        title="Optimize with STARK",
                        command=core.OPTIMIZE,
                        arguments=[{"uri": uri}],
                    ),
                )
            )
        best = job.best if job is not None else None
        if (
            job is not None
            and job.best_kernel is not None
            and best is not None
            and best.faster
            and _wanted(KIND_APPLY_BEST, only)
        ):
            title = f"Apply {best.apply_label()}"
            actions.append(
                types.CodeAction(
                    title=title,
                    kind=KIND_APPLY_BEST,
                    command=types.Command(
                        title=title, command=core.APPLY_BEST, arguments=[{"jobId": job.id}]
                    ),
                )
            )
    return actions


def propose_fix(server: StarkLanguageServer, job: Job, event: Any) -> None:
    """Job listener: the debug agent's fix comes back as an edit the user accepts (VS
    Code shows a preview because of the confirmation annotation; Neovim puts it in the
    buffer, unsaved, undoable). It also stays available as a code action and a lens."""
    if job.active or job.kind is not JobKind.DEBUG or job.state is not JobState.DONE:
        return
    kernel, debug = job.kernel, job.debug
    if debug is None or not debug.fixed_code or kernel is None:
        return
    fixed = debug.fixed
    if fixed is not None and fixed.correct:
        note = f"now correct, {fixed.speedup:.2f}x" if fixed.speedup else "now correct"
    else:
        note = "not verified correct" if fixed is None else f"still failing: {fixed.error}"
    label = f"STARK debug agent fix for {kernel.name} ({note})"
    code = debug.fixed_code

    async def propose() -> None:
        outcome = await edits.replace_file_via_client(server, kernel, code, label)
        log.info("debug fix %s: applied=%s %s", job.id, outcome.applied, outcome.reason or "")

    server.background.spawn(propose(), f"debug fix proposal of {job.id}")


def register(server: StarkLanguageServer) -> None:
    server.job_listeners.append(lambda job, event: propose_fix(server, job, event))

    @server.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(
            code_action_kinds=[types.CodeActionKind.QuickFix, KIND_OPTIMIZE, KIND_APPLY_BEST],
            resolve_provider=False,
        ),
    )
    async def on_code_action(
        ls: StarkLanguageServer, params: types.CodeActionParams
    ) -> list[types.CodeAction]:
        return await code_actions(ls, params)
