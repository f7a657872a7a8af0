"""Reading a failed extension build: the compiler's first error line (gcc/clang/nvcc
`file:line: error`, or the linker's `undefined reference`) as a one-line summary, and an
excerpt of the log around it, out of the worker's log since the build began."""

from __future__ import annotations

import re
from pathlib import Path

_ERROR_LINE = re.compile(
    r"(^\S[^\n]*?:\d+(?::\d+)?:\s*(?:fatal )?error\b[^\n]*)"  # gcc/clang: file:line:col: error
    r"|(^\S[^\n]*?\(\d+\):\s*error\b[^\n]*)"  # nvcc: file(line): error
    r"|(^[^\n]*undefined reference[^\n]*)",
    re.MULTILINE,
)
LOG_EXCERPT_CHARS = 8000


def first_error_line(text: str) -> str | None:
    match = _ERROR_LINE.search(text)
    if match:
        return match.group(0).strip()
    for line in text.splitlines():
        if "error" in line.lower() and not line.startswith(("[", "FAILED:", "ninja:")):
            return line.strip()
    return None


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "?"


def file_size(path: Path | None) -> int:
    try:
        return path.stat().st_size if path else 0
    except OSError:
        return 0


def read_from(path: Path | None, offset: int) -> str:
    if path is None:
        return ""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read(4 << 20).decode("utf-8", errors="replace")
    except OSError:
        return ""


def describe_failure(output: str, exc: Exception) -> tuple[str, str]:
    """(one-line summary, log excerpt; "" when the whole output is short) of a failed build
    whose log since its start is `output` and whose exception is `exc`."""
    first = first_error_line(output)
    kind = "CUDA compilation" if re.search(r"\.cu[:(]", first or "") else "C++ compilation"
    if first and "undefined reference" in first:
        kind = "linking"
    if first:  # keep file:line:col but drop the long cache path
        first = re.sub(r"^\S*/(?=[^/\s]+[:(]\d)", "", first)
    summary = (
        f"{kind} failed: {first}" if first else f"extension build failed: {_last_line(str(exc))}"
    )
    excerpt = ""
    if len(output) > LOG_EXCERPT_CHARS:
        at = output.find(first) if first else 0
        excerpt = output[max(0, at - 500) : max(0, at - 500) + LOG_EXCERPT_CHARS]
    return summary, excerpt
