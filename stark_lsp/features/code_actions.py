"""Code actions: "Fix with STARK debug agent" on a failing kernel's diagnostics,
"Optimize with STARK" on a reference, "Apply best kernel (1.31x vs eager,
re-measured)" when a job's best kernel was re-measured faster than eager beyond the
noise (stark_lsp.best; a provisional, slower or within-noise "best" is not offered),
and the debug agent's proposed fix as an edit to accept."""

from __future__ import annotations

from lsprotocol import types

from stark_lsp import commands, edits
from stark_lsp.jobs import JobKind, JobState
from stark_lsp.lenses import latest_optimize
from stark_lsp.server import StarkLanguageServer, UserError, uri_to_path
from stark_lsp.tasks import DocumentKind

KIND_OPTIMIZE = types.CodeActionKind.Source + ".stark.optimize"
KIND_APPLY_BEST = types.CodeActionKind.Source + ".stark.applyBest"


def _wanted(kind: str, only: list[str] | None) -> bool:
    return not only or any(kind == o or kind.startswith(o + ".") for o in only)


async def code_actions(
    ls: StarkLanguageServer, params: types.CodeActionParams
) -> list[types.CodeAction]:
    uri = params.text_document.uri
    if not uri.startswith("file:"):
        return []
    try:
        analysis = await ls.analysis(uri)
        path = uri_to_path(uri)
    except UserError:
        return []
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
                    command=commands.DEBUG,
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
        job = latest_optimize(ls, reference)
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
                        command=commands.OPTIMIZE,
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
                        title=title, command=commands.APPLY_BEST, arguments=[{"jobId": job.id}]
                    ),
                )
            )
    return actions


def register(server: StarkLanguageServer) -> None:
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
