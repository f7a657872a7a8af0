"""Diagnostics: static checks of references and kernels (on open/change), and
verdict diagnostics of a kernel after a verification or a job (from EvalResult).

Every verdict diagnostic carries `data` = {jobId, nodeId, uri, stage} for the
code actions, and links the trace files through `relatedInformation`."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from lsprotocol import types

from engine.bench.result import EvalResult
from stark_lsp import sourcemap
from stark_lsp.tasks import DocumentInfo, DocumentKind, ReferenceLookup

SOURCE = "stark"
MAX_COMPILER_DIAGNOSTICS = 20


@dataclass(slots=True)
class RelatedFile:
    """A trace file worth one click from the diagnostic (full log, verify script...)."""

    path: Path
    label: str


def _range(line: int, start: int, end: int) -> types.Range:
    return types.Range(
        start=types.Position(line=max(line, 0), character=max(start, 0)),
        end=types.Position(line=max(line, 0), character=max(end, start, 0)),
    )


def _line_range(lines: list[str], line: int) -> types.Range:
    line = min(max(line, 0), max(len(lines) - 1, 0))
    text = lines[line] if lines else ""
    start = len(text) - len(text.lstrip())
    return _range(line, start, max(len(text), start + 1))


def _diag(
    rng: types.Range,
    message: str,
    code: str,
    severity: types.DiagnosticSeverity = types.DiagnosticSeverity.Error,
    data: dict | None = None,
    related: list[types.DiagnosticRelatedInformation] | None = None,
) -> types.Diagnostic:
    return types.Diagnostic(
        range=rng,
        message=message,
        severity=severity,
        source=SOURCE,
        code=code,
        data=data,
        related_information=related or None,
    )


# -- static checks ------------------------------------------------------------


def _reference_checks(info: DocumentInfo, lines: list[str]) -> list[types.Diagnostic]:
    out: list[types.Diagnostic] = []
    model = info.model
    anchor = (
        _range(model.line, model.name_start, model.name_end) if model else _line_range(lines, 0)
    )
    if model is None:
        out.append(
            _diag(
                _line_range(lines, info.first_function_line or 0),
                "reference has no top-level `class Model(nn.Module)`",
                "missing-model",
            )
        )
    else:
        if model.forward_line is None:
            out.append(_diag(anchor, "`Model` has no `forward` method", "missing-forward"))
        if not model.has_bases:
            out.append(
                _diag(
                    anchor,
                    "`Model` should subclass `torch.nn.Module`",
                    "model-not-module",
                    types.DiagnosticSeverity.Warning,
                )
            )
    for name, why in (
        ("get_inputs", "the benchmarker calls it for the forward inputs"),
        ("get_init_inputs", "the benchmarker calls it for the constructor arguments"),
    ):
        func = info.functions.get(name)
        if func is None:
            out.append(
                _diag(anchor, f"reference has no top-level `{name}()`: {why}", f"missing-{name}")
            )
            continue
        if func.required_args > 0:
            out.append(
                _diag(
                    _line_range(lines, func.line),
                    f"`{name}()` must be callable without arguments",
                    f"bad-{name}",
                )
            )
    return out


def static_diagnostics(
    source: str, info: DocumentInfo, lookup: ReferenceLookup | None = None
) -> list[types.Diagnostic]:
    """What is wrong with this task file without running anything."""
    lines = source.splitlines()
    out: list[types.Diagnostic] = []
    if info.syntax_error is not None:
        if info.kind is DocumentKind.OTHER:
            return []  # not our file: leave syntax errors to the Python tooling
        err = info.syntax_error
        line = (err.lineno or 1) - 1
        col = max((err.offset or 1) - 1, 0)
        text = lines[line] if 0 <= line < len(lines) else ""
        out.append(
            _diag(
                _range(line, col, max(len(text), col + 1)),
                f"syntax error: {err.msg}",
                "syntax-error",
            )
        )
        return out
    looks_like_reference = info.model is not None or bool(info.functions)
    if info.kind is DocumentKind.REFERENCE or (
        info.kind is DocumentKind.OTHER and looks_like_reference
    ):
        out.extend(_reference_checks(info, lines))
    if info.kind is DocumentKind.KERNEL:
        new = info.model_new
        assert new is not None
        anchor = _range(new.line, new.name_start, new.name_end)
        if new.forward_line is None:
            out.append(_diag(anchor, "`ModelNew` has no `forward` method", "missing-forward"))
        if info.model is not None and lookup is not None and lookup.how == "same-file":
            out.extend(_reference_checks(info, lines))
        if lookup is not None and lookup.path is None:
            comment = info.reference_comment
            rng = _range(comment.line, comment.start, comment.end) if comment else anchor
            severity = (
                types.DiagnosticSeverity.Error if comment else types.DiagnosticSeverity.Warning
            )
            out.append(_diag(rng, lookup.problem or "no reference found", "no-reference", severity))
    elif info.reference_comment is not None and info.kind is DocumentKind.OTHER:
        comment = info.reference_comment
        out.append(
            _diag(
                _range(comment.line, comment.start, comment.end),
                "`# stark: reference=` names a reference, but this file defines no `ModelNew`",
                "missing-modelnew",
                types.DiagnosticSeverity.Warning,
            )
        )
    return out


# -- verdicts -------------------------------------------------------------------


def related_information(files: list[RelatedFile]) -> list[types.DiagnosticRelatedInformation]:
    return [
        types.DiagnosticRelatedInformation(
            location=types.Location(uri=f.path.resolve().as_uri(), range=_range(0, 0, 0)),
            message=f.label,
        )
        for f in files
    ]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _compile_diagnostics(
    source: str,
    tree: ast.Module | None,
    result: EvalResult,
    data: dict,
    related: list[types.DiagnosticRelatedInformation],
) -> list[types.Diagnostic]:
    lines = source.splitlines()
    out: list[types.Diagnostic] = []
    messages = [
        m
        for m in sourcemap.parse_compiler_messages(result.log or "")
        if m.severity in ("error", "fatal error")
    ]
    fallback_line = 0
    if tree is not None:
        calls = sourcemap.find_inline_calls(tree)
        if calls:
            fallback_line = calls[0].line
    for message in messages[:MAX_COMPILER_DIAGNOSTICS]:
        location = None
        if tree is not None:
            generated = sourcemap.read_generated(message)
            location = sourcemap.map_compiler_line(message, tree, source, generated)
        where = f"{Path(message.file).name}:{message.line}"
        if location is not None:
            rng = _range(location.line, location.start, location.end)
            text = f"{message.message} [{where}]"
        else:
            rng = _line_range(lines, fallback_line)
            text = f"{where}: {message.message}"
        out.append(
            _diag(
                rng,
                f"compile error: {text}",
                "compile-error",
                data={**data, "stage": "compile"},
                related=related,
            )
        )
    return out


def verdict_diagnostics(
    source: str,
    info: DocumentInfo,
    result: EvalResult,
    data: dict,
    files: list[RelatedFile] | None = None,
) -> list[types.Diagnostic]:
    """Diagnostics for one verdict on this kernel source (empty when it passed cleanly)."""
    lines = source.splitlines()
    related = related_information(files or [])
    new = info.model_new
    class_range = _range(new.line, new.name_start, new.name_end) if new else _line_range(lines, 0)
    forward_range = (
        _line_range(lines, new.forward_line)
        if new and new.forward_line is not None
        else class_range
    )
    out: list[types.Diagnostic] = []
    stage = result.stage or ("compile" if not result.compiled else "correctness")
    failing_data = {**data, "stage": stage, "failing": True}
    if not result.compiled and stage == "compile":
        out.extend(_compile_diagnostics(source, info.tree, result, failing_data, related))
        if not out:
            rng = (
                _line_range(lines, result.error_location.line - 1)
                if result.error_location
                else class_range
            )
            out.append(
                _diag(
                    rng,
                    f"build failed: {result.error or 'compile error'}",
                    "compile-error",
                    data=failing_data,
                    related=related,
                )
            )
    elif not result.correct:
        if result.error_location is not None and 0 < result.error_location.line <= len(lines):
            where = (
                f" in {result.error_location.function}()" if result.error_location.function else ""
            )
            out.append(
                _diag(
                    _line_range(lines, result.error_location.line - 1),
                    f"{stage} error{where}: {result.error or 'exception'}",
                    f"{stage}-error",
                    data=failing_data,
                    related=related,
                )
            )
        elif stage == "correctness" or result.max_abs_err is not None:
            out.append(
                _diag(
                    forward_range,
                    f"output mismatch: max abs err {_fmt(result.max_abs_err)}"
                    f" (mean {_fmt(result.mean_abs_err)}): {result.error or 'incorrect'}",
                    "correctness",
                    data=failing_data,
                    related=related,
                )
            )
        else:
            out.append(
                _diag(
                    class_range,
                    f"{stage} failure: {result.error or 'failed'}",
                    f"{stage}-error",
                    data=failing_data,
                    related=related,
                )
            )
    for flag in result.flags:
        out.append(
            _diag(
                class_range,
                f"suspicious: {flag.replace('_', ' ')} ({flag})",
                f"flag-{flag}",
                types.DiagnosticSeverity.Warning,
                data={**data, "stage": "flag", "flag": flag},
                related=related,
            )
        )
    return out
