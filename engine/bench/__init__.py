"""The benchmarker: truthful correctness and speed for untrusted candidates.

It knows nothing about search. Use `evaluate()` or a `Benchmarker` (which keeps
a warm fork server between evaluations).
"""

from engine.bench.config import EvalConfig
from engine.bench.evaluate import Benchmarker, evaluate
from engine.bench.result import ErrorLocation, EvalResult, ProfileEntry, TimingStats

__all__ = [
    "Benchmarker",
    "ErrorLocation",
    "EvalConfig",
    "EvalResult",
    "ProfileEntry",
    "TimingStats",
    "evaluate",
]
