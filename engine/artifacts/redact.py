"""Secret removal for everything a task writes or announces.

`Redactor` holds the run's known secrets (API keys, proxy passwords) and applies the trace's
heuristic rules on top; `redact_fields` applies it to a whole value (an event, a dict), with
the heuristics only on free-text fields, so an identifier or a path is never mangled.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass, replace
from typing import Any

from engine.trace.sanitize import REDACTED, redact

# Fields that carry free text (errors, logs) and get the heuristic redaction too.
FREE_TEXT_FIELDS = frozenset({"error", "log", "logs", "message", "detail"})


class Redactor:
    """Removes the run's known secrets and anything that looks like a key (the trace's
    redaction rules) from text bound for the task directory or an event."""

    MARK = REDACTED

    def __init__(self, secrets: list[str | None] | None = None) -> None:
        self.secrets = sorted({s for s in (secrets or []) if s and len(s) >= 4}, key=len)[::-1]

    def __call__(self, text: str) -> str:
        return redact(self.exact(text), extra=self.secrets)

    def exact(self, text: str) -> str:
        """Only the known secret values: for state files, where a heuristic could alter code."""
        for secret in self.secrets:
            text = text.replace(secret, self.MARK)
        return text


def redact_fields(redactor: Redactor, value: Any, free_text: bool = False) -> Any:
    """A copy of `value` with secrets removed from every string in it. Free text (error
    and log fields) gets the full heuristic redaction; identifiers and paths only lose
    the run's known secret values, so a heuristic can never break a path."""
    if isinstance(value, str):
        return redactor(value) if free_text else redactor.exact(value)
    if isinstance(value, dict):
        return {
            k: redact_fields(redactor, v, free_text or k in FREE_TEXT_FIELDS)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact_fields(redactor, v, free_text) for v in value)
    if is_dataclass(value) and not isinstance(value, type):
        changes = {
            f.name: redact_fields(redactor, getattr(value, f.name), f.name in FREE_TEXT_FIELDS)
            for f in fields(value)
            if f.init
        }
        return replace(value, **changes)
    return value
