"""Map a compiler's `file:line` inside a `load_inline` build back to the line of
the Python file whose string literal held that source.

`torch.utils.cpp_extension.load_inline` writes `main.cpp` as
"#include <torch/extension.h>" + the cpp sources joined by newlines (+ pybind
bindings), and `cuda.cu` as three include lines + the CUDA sources. Rather than
trusting those offsets, we locate each literal's text inside the generated file
(read from disk when the log names it, else rebuilt the way torch builds it),
so extra headers, `no_implicit_headers=True` or several sources all map right.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

# gcc/clang: /path/main.cpp:12:5: error: message
_GCC = re.compile(
    r"^(?P<file>[^\s:][^:\n]*?\.(?:cpp|cc|cxx|cu|cuh|h|hpp)):(?P<line>\d+):(?:(?P<col>\d+):)?\s*"
    r"(?P<sev>fatal error|error|warning|note):\s*(?P<msg>.*)$",
    re.M,
)
# nvcc: /path/cuda.cu(12): error: message   (optionally "error #20: ...")
_NVCC = re.compile(
    r"^(?P<file>[^\s(][^(\n]*?\.(?:cu|cuh|cpp|h)):?\((?P<line>\d+)\):\s*"
    r"(?P<sev>error|warning)(?:\s*#[\w-]+(?:-D)?)?:\s*(?P<msg>.*)$",
    re.M,
)

CPP_HEADERS = ("#include <torch/extension.h>",)
CUDA_HEADERS = ("#include <torch/types.h>", "#include <cuda.h>", "#include <cuda_runtime.h>")


@dataclass(slots=True)
class CompilerMessage:
    file: str
    line: int  # 1-based, in the generated file
    column: int | None  # 1-based
    severity: str  # error | warning | fatal error | note
    message: str


@dataclass(slots=True)
class SourceLiteral:
    """A Python string constant that may hold C++/CUDA source."""

    value: str
    node: ast.Constant
    role: str  # cpp | cuda | unknown


@dataclass(slots=True)
class MappedLocation:
    line: int  # 0-based line in the Python file
    start: int
    end: int


def parse_compiler_messages(log: str) -> list[CompilerMessage]:
    """Errors and warnings from gcc/clang/nvcc output, in order, de-duplicated."""
    found: list[tuple[int, CompilerMessage]] = []
    seen: set[tuple[str, int, str]] = set()
    for pattern in (_GCC, _NVCC):
        for match in pattern.finditer(log):
            key = (match.group("file"), int(match.group("line")), match.group("msg"))
            if key in seen:
                continue
            seen.add(key)
            col = match.groupdict().get("col")
            found.append(
                (
                    match.start(),
                    CompilerMessage(
                        file=match.group("file").strip(),
                        line=int(match.group("line")),
                        column=int(col) if col else None,
                        severity=match.group("sev"),
                        message=match.group("msg").strip(),
                    ),
                )
            )
    return [message for _, message in sorted(found, key=lambda item: item[0])]


def _resolve_strings(
    expr: ast.AST, assignments: dict[str, ast.AST], depth: int = 0
) -> list[ast.Constant]:
    """String constants an argument expression evaluates to (names followed once or twice)."""
    if depth > 4:
        return []
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return [expr]
    if isinstance(expr, ast.List | ast.Tuple):
        out: list[ast.Constant] = []
        for element in expr.elts:
            out.extend(_resolve_strings(element, assignments, depth + 1))
        return out
    if isinstance(expr, ast.Name) and expr.id in assignments:
        return _resolve_strings(assignments[expr.id], assignments, depth + 1)
    return []


@dataclass(slots=True)
class InlineCall:
    """One `load_inline(...)` call: its line and the literals of each source kind."""

    line: int  # 0-based
    cpp: list[ast.Constant]
    cuda: list[ast.Constant]
    implicit_headers: bool


def find_inline_calls(tree: ast.Module) -> list[InlineCall]:
    assignments: dict[str, ast.AST] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    assignments[target.id] = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
            assignments[node.target.id] = node.value
    calls: list[InlineCall] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name != "load_inline":
            continue
        args: dict[str, ast.AST] = {}
        for index, key in enumerate(("name", "cpp_sources", "cuda_sources")):
            if index < len(node.args):
                args[key] = node.args[index]
        for keyword in node.keywords:
            if keyword.arg:
                args[keyword.arg] = keyword.value
        no_headers = args.get("no_implicit_headers")
        calls.append(
            InlineCall(
                line=node.lineno - 1,
                cpp=_resolve_strings(args["cpp_sources"], assignments)
                if "cpp_sources" in args
                else [],
                cuda=_resolve_strings(args["cuda_sources"], assignments)
                if "cuda_sources" in args
                else [],
                implicit_headers=not (
                    isinstance(no_headers, ast.Constant) and no_headers.value is True
                ),
            )
        )
    return calls


def _all_multiline_strings(tree: ast.Module) -> list[ast.Constant]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "\n" in node.value
    ]


def _rebuilt_source(call: InlineCall, role: str) -> str:
    """The generated file as torch writes it (when it is gone from disk)."""
    if role == "cuda":
        headers = CUDA_HEADERS if call.implicit_headers else ()
        return "\n".join([*headers, *(c.value for c in call.cuda)]) if call.cuda else ""
    headers = CPP_HEADERS if call.implicit_headers else ()
    return "\n".join([*headers, *(c.value for c in call.cpp)]) if call.cpp else ""


def _python_line_for(node: ast.Constant, line_in_value: int, source_lines: list[str]) -> int | None:
    """0-based file line of line `line_in_value` (0-based) of a string literal's value."""
    value: str = node.value
    first = node.lineno - 1
    last = (node.end_lineno or node.lineno) - 1
    value_lines = value.split("\n")
    if line_in_value >= len(value_lines):
        return None
    if value.count("\n") == last - first:
        return first + line_in_value  # one physical line per value line: the common case
    # Escapes, implicit concatenation or continuations: find the text itself.
    wanted = value_lines[line_in_value].strip()
    if not wanted:
        return None
    hits = [i for i in range(first, last + 1) if wanted in source_lines[i]]
    if not hits:
        return None
    expected = first + line_in_value
    return min(hits, key=lambda i: abs(i - expected))


def _locate(
    target: int,
    generated_text: str,
    literals: list[ast.Constant],
    source_lines: list[str],
    column: int | None,
) -> MappedLocation | None:
    for literal in literals:
        index = generated_text.find(literal.value)
        if index < 0 or not literal.value.strip():
            continue
        offset = generated_text.count("\n", 0, index)
        if not offset <= target <= offset + literal.value.count("\n"):
            continue
        line_in_value = target - offset
        file_line = _python_line_for(literal, line_in_value, source_lines)
        if file_line is None or file_line >= len(source_lines):
            continue
        text = source_lines[file_line]
        start = len(text) - len(text.lstrip())
        if line_in_value > 0 and column and column - 1 < len(text):
            start = max(start, column - 1)
        return MappedLocation(line=file_line, start=start, end=max(len(text), start + 1))
    return None


def map_compiler_line(
    message: CompilerMessage,
    tree: ast.Module,
    source: str,
    generated_text: str | None = None,
) -> MappedLocation | None:
    """Where a compiler message on the generated file belongs in the Python file."""
    source_lines = source.splitlines()
    target = message.line - 1  # 0-based line in the generated file
    role = "cuda" if Path(message.file).name.endswith((".cu", ".cuh")) else "cpp"
    calls = find_inline_calls(tree)
    if generated_text:
        literals = [c for call in calls for c in (call.cuda if role == "cuda" else call.cpp)]
        literals += _all_multiline_strings(tree)
        return _locate(target, generated_text, literals, source_lines, message.column)
    for call in calls:
        literals = call.cuda if role == "cuda" else call.cpp
        rebuilt = _rebuilt_source(call, role)
        if rebuilt:
            found = _locate(target, rebuilt, literals, source_lines, message.column)
            if found is not None:
                return found
    return None


def read_generated(message: CompilerMessage, log_dir: Path | None = None) -> str | None:
    """The generated file the compiler complained about, if it is still on disk."""
    path = Path(message.file)
    if not path.is_absolute() and log_dir is not None:
        path = log_dir / path
    try:
        if path.is_file() and path.stat().st_size < 5_000_000:
            return path.read_text(errors="replace")
    except OSError:
        return None
    return None
