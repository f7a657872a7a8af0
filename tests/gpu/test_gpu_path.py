"""The GPU path through the real benchmarker (needs a CUDA device; skipped without one).

One Benchmarker (one warm fork server) and one fresh compile cache serve the whole
module, so these also show that evaluations keep working after faults:
- the hand-written CUDA candidate builds into the content-hash cache, is correct,
  and is never rebuilt (the .so and its mtime are unchanged by a second evaluation);
- the build carries machine code for this device's own sm_XY;
- a CUDA compile error comes back with nvcc's file(line) text in `log`;
- a CUDA illegal memory access is a verdict, and the next evaluation passes;
- the Triton candidate benchmarks like any other;
- GPU defences: torch.empty output and zeroed inputs are rejected; work on a side
  stream is flagged side_stream_suspected (or rejected).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

from engine.bench import Benchmarker, EvalConfig, EvalResult  # noqa: E402

pytestmark = pytest.mark.gpu

REPO = Path(__file__).resolve().parents[2]
ADVERSARIAL = Path(__file__).resolve().parent / "adversarial"
CHAIN_REFERENCE = (REPO / "examples" / "elementwise_chain.py").read_text()
CHAIN_CUDA = (REPO / "examples" / "candidates" / "elementwise_chain_cuda.py").read_text()
SOFTMAX_REFERENCE = (REPO / "examples" / "row_softmax.py").read_text()
SOFTMAX_TRITON = (REPO / "examples" / "candidates" / "row_softmax_triton.py").read_text()
NVCC_ERROR = re.compile(r"(\S*cuda\.cu)\((\d+)\): error[^\n]*undeclared_scale")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fresh by default; STARK_GPU_TEST_CACHE reuses the gpu_suite's --cache-dir so a device
    call does not build the same extensions twice (the no-rebuild test holds either way)."""
    shared = os.environ.get("STARK_GPU_TEST_CACHE")
    return Path(shared) if shared else tmp_path_factory.mktemp("stark-gpu-cache")


@pytest.fixture(scope="module")
def bench(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Benchmarker]:
    os.environ.setdefault("TRITON_CACHE_DIR", str(tmp_path_factory.mktemp("triton-cache")))
    with Benchmarker(cache_dir=cache_dir) as benchmarker:
        yield benchmarker


def cuda_config(**overrides: object) -> EvalConfig:
    values: dict[str, object] = {
        "device": "cuda",
        "warmup_s": 0.05,
        "timing_budget_s": 0.5,
        "min_timing_trials": 10,
        "max_timing_trials": 100,
        "compile_timeout_s": 600.0,
        "run_timeout_s": 180.0,
    }
    values.update(overrides)
    return EvalConfig(**values)  # type: ignore[arg-type]


def built_libraries(cache_dir: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in cache_dir.rglob("*.so")}


def explain(result: EvalResult) -> str:
    return f"{result.stage}: {result.error}\nflags={result.flags}\n{result.log[-3000:]}"


def test_cuda_candidate_builds_once_and_is_correct(bench: Benchmarker, cache_dir: Path) -> None:
    first = bench.evaluate(CHAIN_REFERENCE, CHAIN_CUDA, cuda_config())
    assert first.compiled and first.correct, explain(first)
    assert first.device == "cuda"
    assert first.speedup is not None and first.ref_ms and first.new_ms and first.host_ms
    built = built_libraries(cache_dir)
    assert built, "the CUDA build must land in the content-hash cache"

    second = bench.evaluate(CHAIN_REFERENCE, CHAIN_CUDA, cuda_config())
    assert second.compiled and second.correct, explain(second)
    assert built_libraries(cache_dir) == built, "an identical candidate was rebuilt"


def test_cuda_build_has_code_for_this_device(bench: Benchmarker, cache_dir: Path) -> None:
    result = bench.evaluate(CHAIN_REFERENCE, CHAIN_CUDA, cuda_config(timing_trials=3))
    assert result.correct, explain(result)
    cuobjdump = shutil.which("cuobjdump") or "/usr/local/cuda/bin/cuobjdump"
    if not os.path.exists(cuobjdump):
        pytest.skip("cuobjdump is not installed")
    major, minor = torch.cuda.get_device_capability()
    listings = [
        subprocess.run([cuobjdump, "--list-elf", so], capture_output=True, text=True).stdout
        for so in built_libraries(cache_dir)
    ]
    assert any(f"sm_{major}{minor}" in text for text in listings), listings


def test_cuda_compile_error_reports_file_and_line(bench: Benchmarker, cache_dir: Path) -> None:
    result = bench.evaluate(
        CHAIN_REFERENCE, (ADVERSARIAL / "cuda_compile_error.py").read_text(), cuda_config()
    )
    assert not result.compiled and not result.correct
    assert result.stage == "compile", explain(result)
    match = NVCC_ERROR.search(result.log) or NVCC_ERROR.search(result.error or "")
    assert match, explain(result)
    # The line number points at the offending line of the generated cuda.cu.
    line_no = int(match.group(2))
    sources = [p for p in cache_dir.rglob("cuda.cu") if "undeclared_scale" in p.read_text()]
    assert sources, "the failed build's cuda.cu should stay in its cache directory"
    assert "undeclared_scale" in sources[0].read_text().splitlines()[line_no - 1]


def test_illegal_memory_access_is_a_verdict_and_next_eval_passes(bench: Benchmarker) -> None:
    bad = bench.evaluate(
        CHAIN_REFERENCE, (ADVERSARIAL / "cuda_illegal_memory_access.py").read_text(), cuda_config()
    )
    assert not bad.correct and bad.error, explain(bad)
    assert bad.stage in ("runtime", "crash", "correctness"), explain(bad)
    assert "illegal memory access" in f"{bad.error}\n{bad.log}".lower(), explain(bad)

    after = bench.evaluate(CHAIN_REFERENCE, CHAIN_CUDA, cuda_config())
    assert after.correct, explain(after)


def test_triton_candidate_benchmarks_like_any_other(bench: Benchmarker) -> None:
    pytest.importorskip("triton")
    result = bench.evaluate(SOFTMAX_REFERENCE, SOFTMAX_TRITON, cuda_config())
    assert result.compiled and result.correct, explain(result)
    assert result.speedup is not None and result.new_ms is not None
    assert result.max_abs_err is not None and result.max_abs_err <= 1e-4


@pytest.mark.parametrize("candidate", ["empty_output.py", "zero_inputs.py"])
def test_gpu_cheats_are_rejected(bench: Benchmarker, candidate: str) -> None:
    result = bench.evaluate(CHAIN_REFERENCE, (ADVERSARIAL / candidate).read_text(), cuda_config())
    assert result.compiled, explain(result)
    assert not result.correct, f"{candidate} passed: {result.summary()}"
    assert result.stage == "correctness", explain(result)


def test_side_stream_work_is_flagged_or_rejected(bench: Benchmarker) -> None:
    result = bench.evaluate(
        CHAIN_REFERENCE, (ADVERSARIAL / "side_stream.py").read_text(), cuda_config()
    )
    assert "stream_creation" in result.flags  # the static pre-check, advisory
    assert "side_stream_suspected" in result.flags or not result.correct, result.summary()


def test_side_stream_work_during_timing_is_flagged(bench: Benchmarker) -> None:
    source = (ADVERSARIAL / "side_stream_after_checks.py").read_text()
    result = bench.evaluate(CHAIN_REFERENCE, source, cuda_config(timing_trials=20))
    assert "side_stream_suspected" in result.flags, explain(result)
    if result.correct:
        # Its time is the host time around the synchronize, not the events' near-zero.
        assert result.host_ms is not None and result.new_ms is not None
        assert result.new_ms.median >= result.host_ms.median * 0.9, result.summary()
