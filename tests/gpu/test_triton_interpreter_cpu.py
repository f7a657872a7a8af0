"""The Triton candidate through the real benchmarker on CPU, under Triton's interpreter.

`TRITON_INTERPRET=1` makes `@triton.jit` kernels run with numpy on the host, so on a
machine without a GPU this still checks, through the sandbox: the candidate is imported
from a real file (`@triton.jit` reads its source with `inspect`), the kernel's masking is
right (a row width that is not a power of two as well as one that is), its limit is a clear
error, and the verdict is correct. The interpreter's
timings mean nothing and are not asserted. Compiling for and timing on a GPU:
tests/gpu/test_gpu_path.py.

The reference is examples/row_softmax.py shrunk to 48 rows (the interpreter runs one
program per row, about 1 ms each); the candidate is the bundled file, unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("triton")
torch = pytest.importorskip("torch")

from engine.bench import Benchmarker, EvalConfig, EvalResult  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SOFTMAX_REFERENCE = (REPO / "examples" / "row_softmax.py").read_text()
SOFTMAX_TRITON = (REPO / "examples" / "candidates" / "row_softmax_triton.py").read_text()


def shrunk_reference(rows: int, cols: int) -> str:
    source = re.sub(r"^BATCH = \d+$", f"BATCH = {rows}", SOFTMAX_REFERENCE, flags=re.M)
    source = re.sub(r"^DIM = \d+$", f"DIM = {cols}", source, flags=re.M)
    assert f"BATCH = {rows}" in source and f"DIM = {cols}" in source
    return source


def interpreter_config() -> EvalConfig:
    return EvalConfig(
        device="cpu", correctness_trials=3, timing_trials=3, warmup_s=0.0, run_timeout_s=120.0
    )


def explain(result: EvalResult) -> str:
    return f"{result.stage}: {result.error}\nflags={result.flags}\n{result.log[-3000:]}"


@pytest.fixture(scope="module")
def interpreter_bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Benchmarker]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRITON_INTERPRET", "1")  # read when the fork server starts
        patch.setenv("TRITON_CACHE_DIR", str(tmp_path_factory.mktemp("triton-cache")))
        with Benchmarker(cache_dir=tmp_path_factory.mktemp("cache")) as bench:
            yield bench


@pytest.mark.parametrize("cols", [1000, 2048])
def test_triton_candidate_is_correct_under_the_interpreter(
    interpreter_bench: Benchmarker, cols: int
) -> None:
    result = interpreter_bench.evaluate(
        shrunk_reference(48, cols), SOFTMAX_TRITON, interpreter_config()
    )
    assert result.compiled and result.correct, explain(result)
    assert result.trials_passed == result.correctness_trials == 3
    assert result.max_abs_err is not None and result.max_abs_err <= 1e-5, explain(result)
    assert result.new_ms is not None and result.speedup is not None


def test_triton_candidate_refuses_rows_wider_than_its_block(interpreter_bench: Benchmarker) -> None:
    result = interpreter_bench.evaluate(
        shrunk_reference(2, 40000), SOFTMAX_TRITON, interpreter_config()
    )
    assert not result.correct, explain(result)
    assert "exceed this kernel's limit" in f"{result.error}\n{result.log}", explain(result)


def test_without_the_interpreter_the_candidate_says_it_needs_cuda(tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("TRITON_INTERPRET", raising=False)
        with Benchmarker(cache_dir=tmp_path / "cache") as bench:
            result = bench.evaluate(shrunk_reference(4, 64), SOFTMAX_TRITON, interpreter_config())
    assert not result.correct, explain(result)
    assert "CUDA tensors" in f"{result.error}\n{result.log}", explain(result)
