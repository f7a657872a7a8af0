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
(`beyond_iqr`). The figures' types live with the task's artifacts
(`engine.artifacts.remeasured`), which the summary stores. This module never imports torch:
it only builds sources and reads verdicts.
"""

from __future__ import annotations

import ast
from dataclasses import replace
from typing import Protocol

from engine.artifacts.remeasured import Comparison, Remeasured
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


class Evaluator(Protocol):
    def evaluate(
        self, reference_src: str, candidate_src: str, config: EvalConfig
    ) -> EvalResult: ...


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
