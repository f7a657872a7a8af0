"""Shared fixtures for the benchmarker tests: ONE Benchmarker for the whole session (which
itself checks that many evaluations in a row keep working) and small, fast configs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.bench import Benchmarker, EvalConfig

HERE = Path(__file__).parent


def ref(name: str) -> str:
    """Source of a tiny reference task in tests/bench/refs."""
    return (HERE / "refs" / f"{name}.py").read_text()


def candidate(name: str) -> str:
    """Source of a candidate in tests/bench/adversarial."""
    return (HERE / "adversarial" / f"{name}.py").read_text()


@pytest.fixture(scope="session")
def sources():  # noqa: ANN201
    """(ref, candidate) loaders, for tests that edit a source before evaluating it."""
    return ref, candidate


@pytest.fixture(scope="session")
def bench_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stark-cache")


@pytest.fixture(scope="session")
def benchmarker(bench_cache: Path) -> Iterator[Benchmarker]:
    with Benchmarker(cache_dir=bench_cache) as bench:
        bench.warm_up()
        yield bench


@pytest.fixture
def fast_config() -> EvalConfig:
    return EvalConfig(
        device="cpu",
        correctness_trials=5,
        timing_trials=15,
        warmup_s=0.01,
        timing_budget_s=1.0,
        compile_timeout_s=120.0,
        run_timeout_s=20.0,
        num_threads=2,
    )


@pytest.fixture
def evaluate_files(benchmarker: Benchmarker, fast_config: EvalConfig):  # noqa: ANN201
    """evaluate_files("scale_add", "honest", **config_overrides) -> EvalResult"""

    def run(reference: str, cand: str, **overrides: object):  # noqa: ANN202
        config = EvalConfig.from_dict({**fast_config.to_dict(), **overrides})
        return benchmarker.evaluate(ref(reference), candidate(cand), config)

    return run
