"""Classify a Python document as a STARK reference, a kernel, or neither, and
find a kernel's reference. AST only: the server never imports user code.

Rules (docs/lsp.md):
- a *reference* defines a top-level ``class Model``;
- a *kernel* defines a top-level ``class ModelNew`` (it may also define Model);
- a kernel finds its reference, in this order, from a ``# stark: reference=<path>``
  comment (relative to the kernel's directory), from the task-directory layout
  (``TASK/ref_*.py`` for ``TASK/code/*.py`` and ``TASK/best_kernel.py``), or from
  ``Model`` in the same file.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

REFERENCE_COMMENT = re.compile(r"#\s*stark:\s*reference\s*=\s*(?P<path>\S+)")
ENTRY_POINTS = ("get_inputs", "get_init_inputs")


class DocumentKind(StrEnum):
    REFERENCE = "reference"
    KERNEL = "kernel"
    OTHER = "other"


@dataclass(slots=True)
class ClassInfo:
    """A top-level class: where its name sits (0-based line/columns) and its forward."""

    name: str
    line: int
    name_start: int
    name_end: int
    end_line: int
    has_bases: bool
    forward_line: int | None = None  # 0-based line of `def forward`
    forward_col: int = 0


@dataclass(slots=True, frozen=True)
class FunctionInfo:
    """A top-level entry point (`get_inputs`, `get_init_inputs`): where it is and how
    many arguments it requires. Small on purpose: analyses travel between processes."""

    name: str
    line: int  # 0-based line of `def`
    required_args: int


@dataclass(slots=True)
class ReferenceComment:
    path: str
    line: int
    start: int
    end: int


@dataclass(slots=True)
class DocumentInfo:
    """What the AST says about one document."""

    kind: DocumentKind
    syntax_error: SyntaxError | None = None
    model: ClassInfo | None = None
    model_new: ClassInfo | None = None
    # the entry points the benchmarker calls (ENTRY_POINTS), by name
    functions: dict[str, FunctionInfo] = field(default_factory=dict)
    first_function_line: int | None = None  # 0-based line of the first top-level def
    reference_comment: ReferenceComment | None = None
    tree: ast.Module | None = None  # dropped when the analysis comes from the worker

    @property
    def is_task(self) -> bool:
        return self.kind is not DocumentKind.OTHER


@dataclass(slots=True)
class ReferenceLookup:
    """Result of resolving a kernel's reference; `problem` explains a failure."""

    path: Path | None
    how: str  # comment | layout | same-file | none
    problem: str | None = None


def _class_info(node: ast.ClassDef, lines: list[str]) -> ClassInfo:
    line = node.lineno - 1
    text = lines[line] if line < len(lines) else ""
    start = text.find(node.name, node.col_offset)
    start = start if start >= 0 else node.col_offset
    info = ClassInfo(
        name=node.name,
        line=line,
        name_start=start,
        name_end=start + len(node.name),
        end_line=(node.end_lineno or node.lineno) - 1,
        has_bases=bool(node.bases),
    )
    for item in node.body:
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name == "forward":
            info.forward_line = item.lineno - 1
            info.forward_col = item.col_offset
    return info


def _function_info(node: ast.FunctionDef | ast.AsyncFunctionDef) -> FunctionInfo:
    args = node.args
    required = len(args.posonlyargs) + len(args.args) - len(args.defaults)
    required += sum(1 for default in args.kw_defaults if default is None)
    return FunctionInfo(node.name, node.lineno - 1, required)


def find_reference_comment(source: str) -> ReferenceComment | None:
    """The first `# stark: reference=...` comment (a real comment, not text in a string)."""
    if "stark:" not in source:
        return None
    try:
        # lazily: the comment usually heads the file, so a 5 MB kernel is not tokenized
        # to its end (pure Python, tens of seconds)
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            found = _reference_in(tok)
            if found is not None:
                return found
        return None
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass
    for number, text in enumerate(source.splitlines(), start=1):
        col = text.find("#")
        if col >= 0 and not text[:col].strip():
            found = _reference_in(
                tokenize.TokenInfo(
                    tokenize.COMMENT, text[col:], (number, col), (number, len(text)), text
                )
            )
            if found is not None:
                return found
    return None


def _reference_in(tok: tokenize.TokenInfo) -> ReferenceComment | None:
    if tok.type != tokenize.COMMENT:
        return None
    match = REFERENCE_COMMENT.search(tok.string)
    if match is None:
        return None
    col = tok.start[1] + match.start("path")
    return ReferenceComment(
        path=match.group("path"),
        line=tok.start[0] - 1,
        start=col,
        end=col + len(match.group("path")),
    )


def analyze(source: str) -> DocumentInfo:
    """Parse once and collect everything the features need."""
    comment = find_reference_comment(source)
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        # Still say what it looks like, so a broken reference gets its syntax error shown.
        kind = DocumentKind.OTHER
        if re.search(r"^class\s+ModelNew\b", source, re.M):
            kind = DocumentKind.KERNEL
        elif re.search(r"^class\s+Model\b", source, re.M) or re.search(
            r"^def\s+get_(init_)?inputs\b", source, re.M
        ):
            kind = DocumentKind.REFERENCE
        return DocumentInfo(kind=kind, syntax_error=exc, reference_comment=comment)
    lines = source.splitlines()
    info = DocumentInfo(kind=DocumentKind.OTHER, reference_comment=comment, tree=tree)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Model":
            info.model = _class_info(node, lines)
        elif isinstance(node, ast.ClassDef) and node.name == "ModelNew":
            info.model_new = _class_info(node, lines)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if info.first_function_line is None:
                info.first_function_line = node.lineno - 1
            if node.name in ENTRY_POINTS:
                info.functions[node.name] = _function_info(node)
    if info.model_new is not None:
        info.kind = DocumentKind.KERNEL
    elif info.model is not None:
        info.kind = DocumentKind.REFERENCE
    return info


def _layout_reference(kernel: Path) -> tuple[Path | None, str | None]:
    """`TASK/code/x.py` or `TASK/best_kernel.py` -> the single `TASK/ref_*.py`."""
    candidates_dirs = [kernel.parent]
    if kernel.parent.name == "code":
        candidates_dirs.insert(0, kernel.parent.parent)
    for directory in candidates_dirs:
        refs = sorted(p for p in directory.glob("ref_*.py") if p.is_file() and p != kernel)
        if len(refs) == 1:
            return refs[0], None
        if len(refs) > 1:
            names = ", ".join(p.name for p in refs)
            return None, f"several references in {directory}: {names}; add `# stark: reference=...`"
    return None, None


def find_reference(kernel: Path, info: DocumentInfo) -> ReferenceLookup:
    """Resolve a kernel's reference following the documented order."""
    if info.reference_comment is not None:
        target = (kernel.parent / info.reference_comment.path).resolve()
        if not target.is_file():
            return ReferenceLookup(
                None, "comment", f"reference {info.reference_comment.path!r} not found ({target})"
            )
        return ReferenceLookup(target, "comment")
    path, problem = _layout_reference(kernel)
    if path is not None:
        return ReferenceLookup(path, "layout")
    if info.model is not None:
        return ReferenceLookup(kernel, "same-file")
    return ReferenceLookup(
        None,
        "none",
        problem
        or "no reference found: add `# stark: reference=<relative path>` or define `Model` here",
    )


def applied_kernel_path(reference: Path) -> Path:
    """Where `stark.applyBest` writes the best kernel: next to the reference."""
    return reference.with_name(f"{reference.stem}_stark.py")
