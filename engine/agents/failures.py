"""What a failure was, in a form the offline agent can remember and act on.

A failing node's error is reduced to a failure class (numerics, dtype, layout, ...). A
`FailureRecord` says which transformation failed, on which parent set, for which class and
with what message. Records travel in the `# stark-offline:` header of the modules the agent
writes (a debug fix records what it reverted; a child inherits its parent's records), so a
branch that repaired a failure remembers it even where the failed node is not in the
request's history. Offline modules are a pure function of their transformation set, so a set
that failed for a permanent reason will fail again and is never proposed twice; a precision
change that broke the numerics is not proposed again on any parent; timeouts and harness
failures are transient and may be retried.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Failure classes, most specific first: the first pattern that matches names the class.
_CLASSES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("harness", re.compile(r"benchmarker failed|harness error|stage=harness", re.I)),
    ("timeout", re.compile(r"timed out|timeout", re.I)),
    ("aliasing", re.compile(r"aliases an input", re.I)),
    ("inputs_modified", re.compile(r"modified its inputs", re.I)),
    (
        "numerics",
        re.compile(
            r"mismatch|values differ|tolerance|max abs err|allclose|not close|\bNaN\b|\bInf\b", re.I
        ),
    ),
    (
        "dtype",
        re.compile(r"dtype|expected scalar type|float16|bfloat16|\bhalf\b|\bbf16\b|fp16", re.I),
    ),
    (
        "layout",
        re.compile(r"channels_last|memory_format|stride|view size|contiguous", re.I),
    ),
    ("graph", re.compile(r"cudagraph|cuda graph|captur", re.I)),
    (
        "compile",
        re.compile(
            r"dynamo|inductor|compile|triton|codegen|C\+\+|lowering|BackendCompilerFailed", re.I
        ),
    ),
)
FAILURE_CLASSES = tuple(name for name, _ in _CLASSES) + ("runtime",)
TRANSIENT = frozenset({"harness", "timeout"})  # may pass on a retry of the same code
# A precision change that broke the numerics breaks them on any parent: the error comes
# from the lower precision itself, not from what else the kernel does.
NUMERIC = frozenset({"numerics", "dtype"})
REASON_CHARS = 160
MAX_RECORDS = 24  # records a header carries down a branch (oldest dropped first)


def classify(log: str) -> str:
    """The failure class of an error message or log tail ("runtime" when nothing matches).

    In an error tail (`engine.search.context.error_tail`) only the verdict lines count, so a log
    that merely mentions "timeout" or "compile" cannot change the class."""
    verdict = [
        line for line in (log or "").splitlines() if line.startswith(("error: ", "benchmarker: "))
    ]
    text = "\n".join(verdict) if verdict else (log or "")
    for name, pattern in _CLASSES:
        if pattern.search(text):
            return name
    return "runtime"


def first_line(log: str) -> str:
    """The most telling line of a log, shortened: the first that names an error."""
    lines = [line.strip() for line in (log or "").splitlines() if line.strip()]
    for line in lines:
        if re.search(r"error|mismatch|failed|expected|NaN|timed out", line, re.I):
            return line[:REASON_CHARS]
    return (lines[0] if lines else "no error output")[:REASON_CHARS]


@dataclass(frozen=True, slots=True)
class FailureRecord:
    """`transform` added to `base` (the parent's set) failed with `failure_class`."""

    transform: str
    base: tuple[str, ...]
    failure_class: str
    reason: str

    @property
    def failed_set(self) -> frozenset[str]:
        return frozenset((*self.base, self.transform))

    @property
    def permanent(self) -> bool:
        return self.failure_class not in TRANSIENT

    def blocks(self, candidate: frozenset[str], *, changes_precision: bool) -> bool:
        """Whether this failure rules the candidate set out: the same set (its code is the
        same, so it fails the same way), or, for a precision transformation that broke the
        numerics, any set that adds it again. Transient failures rule nothing out."""
        if not self.permanent:
            return False
        if candidate == self.failed_set:
            return True
        return changes_precision and self.failure_class in NUMERIC and self.transform in candidate

    def to_json(self) -> dict[str, Any]:
        return {
            "transform": self.transform,
            "base": list(self.base),
            "class": self.failure_class,
            "reason": self.reason[:REASON_CHARS],
        }

    @classmethod
    def from_json(cls, data: object) -> FailureRecord | None:
        """None for anything malformed: a header is data from a file, not trusted input."""
        if not isinstance(data, dict):
            return None
        transform, base = data.get("transform"), data.get("base")
        failure_class, reason = data.get("class"), data.get("reason", "")
        if not isinstance(transform, str) or not isinstance(base, list):
            return None
        if failure_class not in FAILURE_CLASSES or not isinstance(reason, str):
            return None
        return cls(transform, tuple(str(b) for b in base), failure_class, reason)


def records_from_meta(meta: dict[str, object] | None) -> list[FailureRecord]:
    """The failure records a module header carries."""
    raw = (meta or {}).get("failures")
    if not isinstance(raw, list):
        return []
    return [r for r in (FailureRecord.from_json(item) for item in raw) if r is not None]


def merge(records: list[FailureRecord], new: list[FailureRecord]) -> list[FailureRecord]:
    """Records in order, each (transform, base, class) once, at most MAX_RECORDS."""
    seen: set[tuple[str, tuple[str, ...], str]] = set()
    out: list[FailureRecord] = []
    for record in [*records, *new]:
        key = (record.transform, record.base, record.failure_class)
        if key not in seen:
            seen.add(key)
            out.append(record)
    return out[-MAX_RECORDS:]
