"""`DebugReport`: what `stark debug` found, the shape its `--json` prints.

The language server parses that JSON into its own view, so the keys of `to_dict()` must
not change; keeping the type here (not in the command) lets any reader rebuild it with
`from_dict` without importing the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.bench.result import EvalResult


@dataclass(slots=True)
class DebugReport:
    """What `stark debug` found: the original verdict, the proposed fix and its verdict.
    `to_dict()` is the `--json` shape the language server parses (keys must not change)."""

    original: EvalResult | None = None
    fixed_code: str | None = None
    fixed: EvalResult | None = None
    error: str | None = None

    @property
    def final(self) -> EvalResult | None:
        """The verdict that counts: the fix's when there is one, else the original's."""
        return self.fixed or self.original

    @property
    def ok(self) -> bool:
        return self.final is not None and self.final.runnable

    def to_dict(self) -> dict[str, Any]:
        return {
            "original": self.original.to_dict() if self.original else None,
            "fixed_code": self.fixed_code,
            "fixed": self.fixed.to_dict() if self.fixed else None,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DebugReport:
        original, fixed = data.get("original"), data.get("fixed")
        return cls(
            original=EvalResult.from_dict(original) if original else None,
            fixed_code=data.get("fixed_code"),
            fixed=EvalResult.from_dict(fixed) if fixed else None,
            error=data.get("error"),
        )
