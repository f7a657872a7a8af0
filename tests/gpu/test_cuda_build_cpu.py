"""The CUDA build path through the real benchmarker, on a machine with nvcc but no GPU.

A CPU-only torch refuses CUDA builds up front (`CUDA_HOME` is None whatever the
environment says), so:

- without help, a CUDA candidate gets a plain verdict that says why (a CPU build of torch),
  not torch's misleading "set CUDA_HOME";
- with a stand-in that only points torch at this machine's CUDA toolkit (a `sitecustomize`
  on the fork server's PYTHONPATH setting `cpp_extension.CUDA_HOME`) and
  `TORCH_CUDA_ARCH_LIST=9.0`, the adversarial compile-error candidate goes through the
  content-hash cache and ninja to real nvcc. That proves on CPU what needs no GPU: the build
  targets sm_90, nvcc's `cuda.cu(LINE)` reaches the verdict, the line is the offending line
  of the cached `cuda.cu`, the language server turns the real log into a diagnostic on the
  right line of the Python file, and the next evaluation in the same Benchmarker passes.

Linking and running CUDA code needs a CUDA torch and a GPU: tests/gpu/test_gpu_path.py.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if torch.version.cuda is not None:
    pytest.skip(
        "a CUDA build of torch: tests/gpu/test_gpu_path.py covers this", allow_module_level=True
    )

from engine.bench import Benchmarker, EvalConfig, EvalResult  # noqa: E402
from stark_lsp import diagnostics  # noqa: E402
from stark_lsp.tasks import analyze  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ADVERSARIAL = Path(__file__).resolve().parent / "adversarial"
CHAIN_REFERENCE = (REPO / "examples" / "elementwise_chain.py").read_text()
COMPILE_ERROR = (ADVERSARIAL / "cuda_compile_error.py").read_text()
NVCC_ERROR = re.compile(r"(\S*cuda\.cu)\((\d+)\): error: identifier \"undeclared_scale\"")
STAND_IN = """\
import torch.utils.cpp_extension as cpp_extension

cpp_extension.CUDA_HOME = {cuda_home!r}
"""

# A pure-PyTorch candidate: the evaluation after the failed build must still pass.
TORCH_CANDIDATE = """\
import torch
import torch.nn as nn


class ModelNew(nn.Module):
    def __init__(self, scale, shift, clamp_min, clamp_max):
        super().__init__()
        self.scale, self.shift = scale, shift
        self.clamp_min, self.clamp_max = clamp_min, clamp_max

    def forward(self, x):
        y = torch.nn.functional.gelu(x * self.scale + self.shift) * torch.sigmoid(x)
        return torch.clamp(y, self.clamp_min, self.clamp_max)
"""


def cpu_config() -> EvalConfig:
    return EvalConfig(
        device="cpu",
        correctness_trials=2,
        timing_trials=3,
        warmup_s=0.0,
        compile_timeout_s=240.0,
        run_timeout_s=60.0,
    )


def explain(result: EvalResult) -> str:
    return f"{result.stage}: {result.error}\nflags={result.flags}\n{result.log[-3000:]}"


@pytest.fixture(scope="module")
def nvcc() -> str:
    found = shutil.which("nvcc")
    if found is None:
        pytest.skip("nvcc is not installed")
    return found


def test_cuda_candidate_on_cpu_torch_says_why(tmp_path: Path) -> None:
    with Benchmarker(cache_dir=tmp_path / "cache") as bench:
        result = bench.evaluate(CHAIN_REFERENCE, COMPILE_ERROR, cpu_config())
    assert not result.compiled and result.stage == "compile", explain(result)
    assert result.error is not None
    assert result.error.startswith("CUDA build impossible: this torch"), explain(result)
    assert "built without CUDA" in result.error


@pytest.fixture(scope="module")
def toolkit_bench(
    nvcc: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Benchmarker, Path]]:
    stand_in = tmp_path_factory.mktemp("cuda-home-stand-in")
    cuda_home = str(Path(nvcc).resolve().parent.parent)
    (stand_in / "sitecustomize.py").write_text(STAND_IN.format(cuda_home=cuda_home))
    cache_dir = tmp_path_factory.mktemp("cuda-build-cache")
    with pytest.MonkeyPatch.context() as patch:
        # Read when the fork server starts, which Benchmarker does on its first evaluation.
        patch.setenv("PYTHONPATH", str(stand_in))
        patch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
        with Benchmarker(cache_dir=cache_dir) as bench:
            bench.warm_up()
            yield bench, cache_dir


@pytest.fixture(scope="module")
def failed_build(toolkit_bench: tuple[Benchmarker, Path]) -> EvalResult:
    bench, _ = toolkit_bench
    return bench.evaluate(CHAIN_REFERENCE, COMPILE_ERROR, cpu_config())


def test_nvcc_error_reaches_the_verdict_and_the_right_python_line(
    toolkit_bench: tuple[Benchmarker, Path], failed_build: EvalResult
) -> None:
    _, cache_dir = toolkit_bench
    result = failed_build
    assert not result.compiled and not result.correct, explain(result)
    assert result.stage == "compile", explain(result)
    assert result.error is not None and result.error.startswith("CUDA compilation failed: cuda.cu(")
    assert "-gencode=arch=compute_90,code=sm_90" in result.log, explain(result)

    match = NVCC_ERROR.search(result.log)
    assert match, explain(result)
    line_no = int(match.group(2))
    generated = [p for p in cache_dir.rglob("cuda.cu") if "undeclared_scale" in p.read_text()]
    assert generated, "the failed build's cuda.cu should stay in its cache directory"
    assert "undeclared_scale" in generated[0].read_text().splitlines()[line_no - 1]

    # The language server's view of this real log: one diagnostic, on the Python line.
    info = analyze(COMPILE_ERROR)
    found = diagnostics.verdict_diagnostics(COMPILE_ERROR, info, result, {"nodeId": 1})
    compile_errors = [d for d in found if d.code == "compile-error"]
    assert compile_errors, [d.message for d in found]
    python_line = COMPILE_ERROR.splitlines()[compile_errors[0].range.start.line]
    assert "undeclared_scale" in python_line, compile_errors[0]
    assert "identifier" in compile_errors[0].message


def test_next_evaluation_after_a_failed_cuda_build_passes(
    toolkit_bench: tuple[Benchmarker, Path], failed_build: EvalResult
) -> None:
    bench, _ = toolkit_bench
    assert failed_build.stage == "compile", explain(failed_build)
    after = bench.evaluate(CHAIN_REFERENCE, TORCH_CANDIDATE, cpu_config())
    assert after.compiled and after.correct, explain(after)


@pytest.mark.parametrize(
    ("capability", "arch_list", "gencode"),
    [
        ((9, 0), "9.0a", "-gencode=arch=compute_90a,code=sm_90a"),
        ((8, 0), "8.0", "-gencode=arch=compute_80,code=sm_80"),
    ],
)
def test_builds_target_the_devices_own_architecture(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], arch_list: str, gencode: str
) -> None:
    from torch.utils import cpp_extension

    from engine.bench.toolchain import cuda_arch_list

    assert cuda_arch_list(*capability) == arch_list
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", arch_list)
    assert cpp_extension._get_cuda_arch_flags() == [gencode]  # this torch accepts it


def test_cuda_builds_are_keyed_by_arch_list_and_nvcc(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from engine.bench.compile_cache import CompileCache

    cache = CompileCache(tmp_path, "cpu", None)
    cuda_build = {"name": "k", "cpp_sources": "", "cuda_sources": "__global__ void k() {}"}
    cpp_build = {"name": "k", "cpp_sources": "int f() { return 1; }"}
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0a")
    first = cache._key("load_inline", cuda_build), cache._key("load_inline", cpp_build)
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    second = cache._key("load_inline", cuda_build), cache._key("load_inline", cpp_build)
    assert first[0] != second[0]  # another arch list: another CUDA build
    assert first[1] == second[1]  # C++ builds do not care
