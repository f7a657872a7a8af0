"""Fresh measurements of a task's best kernel, after the search.

The search's best speedup is the maximum over many noisy measurements, so it is biased
upwards (a copy of the reference can score 1.05x). The figures a user is shown come from
new evaluations instead, each one interleaved (both sides timed in the same run, so each
side's median and IQR come from the same conditions):

- eager: the reference `Model` against the best kernel;
- torch.compile: the reference with its forward compiled by Inductor (as the *reference*
  side) against the best kernel, so "vs torch.compile" is one measurement, not a ratio of
  two separate speedups.

A win counts as real only when the two sides' interquartile ranges lie apart
(`beyond_iqr`). This module never imports torch: it only builds sources and reads verdicts.
"""

from __future__ import annotations

import ast
import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from engine.bench.config import EvalConfig
from engine.bench.result import EvalResult

COMPILE_BASELINE_SUFFIX = '''

# --- STARK baseline: the reference, compiled with torch.compile (default mode) ---
class ModelNew(Model):
    """Same parameters (same construction order), forward compiled by Inductor."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._compiled_forward = torch.compile(super().forward)

    def forward(self, *args):
        return self._compiled_forward(*args)
'''

COMPILED_REFERENCE_SUFFIX = """

# --- STARK: this comparison's reference is the torch.compile'd model ---
# (the name Model stays bound to the original class: KernelBench's super(Model, self) needs it)
_stark_eager_init = Model.__init__


def _stark_compiled_init(self, *args, **kwargs):
    _stark_eager_init(self, *args, **kwargs)
    self.forward = torch.compile(self.forward)


Model.__init__ = _stark_compiled_init
"""


def _require_model(reference_src: str) -> None:
    tree = ast.parse(reference_src)
    if not any(isinstance(n, ast.ClassDef) and n.name == "Model" for n in tree.body):
        raise ValueError("reference defines no top-level Model class")


def compile_baseline_source(reference_src: str) -> str:
    """A candidate file: the reference plus a ModelNew whose forward is torch.compile'd."""
    _require_model(reference_src)
    return reference_src.rstrip() + "\n" + COMPILE_BASELINE_SUFFIX


def compiled_reference_source(reference_src: str) -> str:
    """A reference file whose `Model` runs its forward through torch.compile, so a kernel
    is timed against torch.compile in one interleaved evaluation."""
    _require_model(reference_src)
    return reference_src.rstrip() + "\n" + COMPILED_REFERENCE_SUFFIX


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

    def text(self) -> str:
        parts = [
            c.text(name)
            for name, c in (("eager", self.vs_eager), ("torch.compile", self.vs_compile))
            if c
        ]
        if self.error:
            parts.append(f"({self.error})")
        return ", ".join(parts)


class Evaluator(Protocol):
    def evaluate(
        self, reference_src: str, candidate_src: str, config: EvalConfig
    ) -> EvalResult: ...


def verdict_text(result: EvalResult) -> str:
    """Why an evaluation gave no comparison, in one line."""
    if result.runnable:
        return "no speedup was measured"
    stage = result.stage or ("correctness" if result.compiled else "compile")
    return f"{stage}: {result.error or 'incorrect output'}"[:300]


def remeasure(
    benchmarker: Evaluator,
    reference_src: str,
    kernel_src: str,
    config: EvalConfig,
    *,
    compile_baseline: bool = True,
) -> Remeasured:
    """Evaluate the kernel afresh against eager and, if asked, against torch.compile.

    The kernel's correctness is checked again on each side's fresh inputs; a side whose
    evaluation fails (the compiled reference does not build, the kernel disagrees) gives
    None and its reason in `error`. No profile is taken: only the timings matter here."""
    quiet = replace(config, profile=False)
    out = Remeasured()
    errors: list[str] = []
    try:
        out.vs_eager = Comparison.from_result(
            benchmarker.evaluate(reference_src, kernel_src, quiet)
        )
    except ValueError as exc:
        errors.append(f"vs eager: {exc}")
    if compile_baseline:
        try:
            compiled = compiled_reference_source(reference_src)
            verdict = benchmarker.evaluate(compiled, kernel_src, quiet)
            out.vs_compile = Comparison.from_result(verdict)
        except ValueError as exc:
            errors.append(f"vs torch.compile: {exc}")
    out.error = "; ".join(errors) or None
    return out


def _ms(value: float) -> str:
    return f"{value:.3g}"
