"""One node of the STARK search tree: a candidate kernel, its verdict and the prompt
artefacts the search reuses, plus the scoring rules (`score_of`, `relative_iqr`,
`noise_discounted_score`).

It round-trips through JSON (`StarkNode.to_dict` / `from_dict`) inside tree.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from engine.bench.result import EvalResult

Phase = Literal["seed", "optimize", "debug"]
Mode = Literal["explore", "exploit"]
PHASES: tuple[str, ...] = ("seed", "optimize", "debug")


def score_of(result: EvalResult | None) -> float:
    """The search's objective: the measured speedup if the kernel is correct, else 0.

    Incorrect, uncompiled or unmeasured kernels all score 0, so no amount of speed
    makes a wrong kernel attractive."""
    if result is None or not result.runnable or result.speedup is None:
        return 0.0
    return float(result.speedup)


def relative_iqr(result: EvalResult | None) -> float:
    """Both sides' IQR/median added: how far apart two speedups of this verdict's quality
    must be before the difference says more than the noise does."""
    if result is None:
        return 0.0
    total = 0.0
    for side in (result.ref_ms, result.new_ms):
        if side is not None and side.median > 0:
            total += side.iqr / side.median
    return total


def noise_discounted_score(result: EvalResult | None) -> float:
    """The score the best-kernel rule ranks by: the speedup, divided by (1 + both sides'
    IQR/median) when the benchmarker flagged the verdict noisy, so a spread measurement
    must beat a clean one by more than its own noise. It depends only on the verdict, never
    on the order nodes arrived in."""
    score = score_of(result)
    if result is None or "noisy" not in result.flags:
        return score
    return score / (1.0 + relative_iqr(result))


@dataclass(slots=True)
class StarkNode:
    """One candidate kernel and everything needed to reuse its history in prompts."""

    node_id: int
    parent_id: int | None
    code: str
    code_path: Path | None = None
    metrics: EvalResult | None = None
    score: float = 0.0
    plan_json: str | None = None
    anchored_code: str | None = None
    logs: str = ""
    phase: str = "seed"
    created_round: int = 0
    children: list[int] = field(default_factory=list)
    # Why the node failed before or during benchmarking (parse error, LLM failure,
    # benchmark error); None for a correct kernel.
    error: str | None = None
    # A byte-identical earlier node whose verdict this node reuses (not benchmarked again).
    reused_from: int | None = None
    # The code is the reference (or equivalent to it, engine.search.equivalence): it may be
    # expanded, but it is never the best kernel and never counts as a win.
    baseline: bool = False

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, not {self.phase!r}")

    @property
    def runnable(self) -> bool:
        """Compiled and correct: a kernel worth optimising further."""
        return self.metrics is not None and self.metrics.runnable

    @property
    def buggy(self) -> bool:
        """Anything that is not runnable needs a debug round (or pruning)."""
        return not self.runnable

    @property
    def speedup(self) -> float | None:
        return self.metrics.speedup if self.runnable and self.metrics else None

    @property
    def noisy(self) -> bool:
        """The benchmarker flagged either side's timing as too spread to trust closely."""
        return self.metrics is not None and "noisy" in self.metrics.flags

    @property
    def plan(self) -> dict[str, Any] | None:
        if not self.plan_json:
            return None
        try:
            value = json.loads(self.plan_json)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def plan_title(self) -> str:
        plan = self.plan
        return str(plan.get("title", "")) if plan else ""

    def header(self) -> str:
        """One line that identifies the node in prompts and logs."""
        parent = "-" if self.parent_id is None else str(self.parent_id)
        if self.runnable:
            verdict = f"correct, speedup {self.score:.2f}x"
            if self.baseline:
                verdict += " (a copy of the reference: the baseline, not a kernel)"
        else:
            verdict = f"FAILED: {self.error or 'unknown error'}"
        title = self.plan_title()
        plan = f' plan "{title}"' if title else ""
        return (
            f"node {self.node_id} ({self.phase}, round {self.created_round}, "
            f"parent {parent}){plan}: {verdict}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "parent_id": self.parent_id,
            "code": self.code,
            "code_path": str(self.code_path) if self.code_path else None,
            "metrics": self.metrics.to_dict() if self.metrics else None,
            "score": self.score,
            "plan_json": self.plan_json,
            "anchored_code": self.anchored_code,
            "logs": self.logs,
            "phase": self.phase,
            "created_round": self.created_round,
            "children": list(self.children),
            "error": self.error,
            "reused_from": self.reused_from,
            "baseline": self.baseline,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StarkNode:
        metrics = data.get("metrics")
        return cls(
            node_id=int(data["node_id"]),
            parent_id=data.get("parent_id"),
            code=data.get("code", ""),
            code_path=Path(data["code_path"]) if data.get("code_path") else None,
            metrics=EvalResult.from_dict(metrics) if metrics else None,
            score=float(data.get("score", 0.0)),
            plan_json=data.get("plan_json"),
            anchored_code=data.get("anchored_code"),
            logs=data.get("logs", ""),
            phase=data.get("phase", "seed"),
            created_round=int(data.get("created_round", 0)),
            children=[int(c) for c in data.get("children", [])],
            error=data.get("error"),
            reused_from=data.get("reused_from"),
            baseline=bool(data.get("baseline", False)),
        )
