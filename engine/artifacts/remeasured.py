"""The fresh figures of a task's best kernel, as the task's summary stores them.

`Timing` (one side's median and IQR), `Comparison` (one interleaved evaluation of a baseline
against the kernel) and `Remeasured` (vs eager, vs torch.compile, and why a side is missing)
are data: `summary.json`, the `task_finished` event, batch metrics and the language server
read them. Running the re-measurement is the search's job (`engine.search.remeasure`).
This module never imports torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from engine.bench.result import EvalResult


def beyond_iqr(
    baseline_median: float, baseline_iqr: float, candidate_median: float, candidate_iqr: float
) -> bool:
    """Faster with the two sides' interquartile ranges apart (median +- IQR/2): a win that
    the run-to-run noise of either side cannot explain."""
    return candidate_median + candidate_iqr / 2 < baseline_median - baseline_iqr / 2


def geomean(values: list[float]) -> float | None:
    """Geometric mean of the positive values; None when there are none."""
    positive = [v for v in values if v is not None and v > 0]
    if not positive:
        return None
    return math.exp(sum(math.log(v) for v in positive) / len(positive))


@dataclass(slots=True)
class Timing:
    """One side of a comparison: median and interquartile range, milliseconds."""

    median: float
    iqr: float

    def text(self) -> str:
        return f"{_ms(self.median)}±{_ms(self.iqr)} ms"


@dataclass(slots=True)
class Comparison:
    """One interleaved evaluation of a baseline (the reference side) against a kernel."""

    speedup: float
    baseline_ms: Timing
    candidate_ms: Timing
    beyond_iqr: bool
    noisy: bool

    @classmethod
    def from_result(cls, result: EvalResult) -> Comparison:
        """The comparison a correct, timed verdict carries; ValueError otherwise."""
        if not result.runnable or result.speedup is None:
            raise ValueError(verdict_text(result))
        if result.ref_ms is None or result.new_ms is None:
            raise ValueError("the evaluation reported no timings")
        base = Timing(result.ref_ms.median, result.ref_ms.iqr)
        cand = Timing(result.new_ms.median, result.new_ms.iqr)
        return cls(
            speedup=float(result.speedup),
            baseline_ms=base,
            candidate_ms=cand,
            beyond_iqr=beyond_iqr(base.median, base.iqr, cand.median, cand.iqr),
            noisy="noisy" in result.flags,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Comparison | None:
        if data is None:
            return None
        return cls(
            speedup=float(data["speedup"]),
            baseline_ms=Timing(**data["baseline_ms"]),
            candidate_ms=Timing(**data["candidate_ms"]),
            beyond_iqr=bool(data.get("beyond_iqr", False)),
            noisy=bool(data.get("noisy", False)),
        )

    def text(self, baseline: str) -> str:
        """`1.31x vs eager (ref 12.1±0.3 ms → 9.2±0.2 ms)`, marked when within noise."""
        base, cand = self.baseline_ms, self.candidate_ms
        if self.beyond_iqr:
            note = ""
        elif beyond_iqr(cand.median, cand.iqr, base.median, base.iqr):
            note = ", slower beyond IQR"
        else:
            note = ", within IQR"
        note += ", noisy" if self.noisy else ""
        return (
            f"{self.speedup:.2f}x vs {baseline} "
            f"(ref {self.baseline_ms.text()} → {self.candidate_ms.text()}{note})"
        )


@dataclass(slots=True)
class Remeasured:
    """The fresh figures of a task's best kernel; a side that could not be measured is None
    and `error` says why (a side that was not asked for is None with no error)."""

    vs_eager: Comparison | None = None
    vs_compile: Comparison | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Remeasured | None:
        if data is None:
            return None
        return cls(
            vs_eager=Comparison.from_dict(data.get("vs_eager")),
            vs_compile=Comparison.from_dict(data.get("vs_compile")),
            error=data.get("error"),
        )

    @property
    def not_faster_than_eager(self) -> bool:
        """The fresh figure says the kernel is no faster than eager (speedup <= 1.0): the
        user should keep the reference, whatever the search measured."""
        return self.vs_eager is not None and self.vs_eager.speedup <= 1.0

    def text(self) -> str:
        parts = [
            c.text(name)
            for name, c in (("eager", self.vs_eager), ("torch.compile", self.vs_compile))
            if c
        ]
        if self.error:
            parts.append(f"({self.error})")
        return ", ".join(parts)


def verdict_text(result: EvalResult) -> str:
    """Why an evaluation gave no comparison, in one line."""
    if result.runnable:
        return "no speedup was measured"
    stage = result.stage or ("correctness" if result.compiled else "compile")
    return f"{stage}: {result.error or 'incorrect output'}"[:300]


def _ms(value: float) -> str:
    return f"{value:.3g}"
