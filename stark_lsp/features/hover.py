"""Hover on `class ModelNew`: the last verdict (speedup, median ± IQR of both
sides, errors, flags) with links to its trace; on `class Model`: the last job, with
its best kernel's figure (provisional, or re-measured with both sides' median ± IQR:
stark_lsp.best)."""

from __future__ import annotations

from lsprotocol import types

from engine.bench.result import TimingStats
from stark_lsp.core import Verdict
from stark_lsp.progress import progress_message
from stark_lsp.server import StarkLanguageServer
from stark_lsp.tasks import ClassInfo


def _timing(stats: TimingStats | None) -> str:
    if stats is None:
        return "| n/a | | |"
    return f"| {stats.median:.3f} ms | ± {stats.iqr:.3f} ms | {stats.n} |"


def verdict_markdown(verdict: Verdict) -> str:
    result = verdict.result
    origin = verdict.job_id + (f", node {verdict.node_id}" if verdict.node_id is not None else "")
    if result.correct:
        head = (
            f"**STARK verdict: correct**, **{result.speedup:.2f}x**"
            if result.speedup
            else "**STARK verdict: correct**"
        )
    elif not result.compiled:
        head = f"**STARK verdict: failed to build/load** ({result.stage or 'compile'})"
    else:
        head = f"**STARK verdict: incorrect** ({result.stage or 'correctness'})"
    lines = [f"{head} — {origin}", ""]
    if result.ref_ms or result.new_ms:
        lines += ["| | median | IQR | n |", "|---|---|---|---|"]
        lines.append("| reference " + _timing(result.ref_ms))
        lines.append("| ModelNew " + _timing(result.new_ms))
        lines.append("")
    if result.error:
        lines.append(f"error: `{result.error[:300]}`")
    if result.max_abs_err is not None:
        lines.append(f"max abs err {result.max_abs_err:.3g}")
    lines.append(
        f"flags: {', '.join(result.flags) if result.flags else 'none'} · device {result.device}"
    )
    if verdict.files:
        links = " · ".join(f"[{f.label}]({f.path.resolve().as_uri()})" for f in verdict.files)
        lines += ["", f"trace: {links}"]
    return "\n".join(lines)


def _on_class(cls: ClassInfo | None, position: types.Position) -> bool:
    return cls is not None and position.line == cls.line


async def hover(ls: StarkLanguageServer, uri: str, position: types.Position) -> types.Hover | None:
    found = await ls.file_analysis(uri)
    if found is None:
        return None
    info, path = found[0].info, found[1]
    text: str | None = None
    cls: ClassInfo | None = None
    if _on_class(info.model_new, position):
        cls = info.model_new
        verdict = ls.verdicts.get(path)
        text = (
            verdict_markdown(verdict)
            if verdict
            else "No STARK verdict yet: run **STARK: Verify** (`stark.verify`)."
        )
    elif _on_class(info.model, position):
        cls = info.model
        job = ls.jobs.latest_optimize(path)
        if job is None:
            return None
        text = f"**STARK {job.id}** ({job.state}): {progress_message(job)}"
        best = job.best
        if best is not None:
            text += "\n\n" + best.markdown()
        if job.task_dir:
            text += f"\n\ntask directory: [{job.task_dir.name}]({job.task_dir.resolve().as_uri()})"
    if text is None or cls is None:
        return None
    return types.Hover(
        contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=text),
        range=types.Range(
            start=types.Position(line=cls.line, character=cls.name_start),
            end=types.Position(line=cls.line, character=cls.name_end),
        ),
    )


def register(server: StarkLanguageServer) -> None:
    @server.feature(types.TEXT_DOCUMENT_HOVER)
    async def on_hover(ls: StarkLanguageServer, params: types.HoverParams) -> types.Hover | None:
        return await hover(ls, params.text_document.uri, params.position)
