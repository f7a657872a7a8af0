"""CPU-side checks of the GPU candidates: nvcc exists here, a GPU does not.

- The raw CUDA kernel of examples/candidates/elementwise_chain_cuda.py (a string
  constant, read through the AST: nothing is imported or built by torch) compiles
  with plain nvcc for sm_90, with no torch headers.
- Its per-element formula, compiled for the host from the very same source, agrees
  with the reference Model on CPU (NaN included).
- The torch-facing wrapper compiles against this torch's headers with load_inline's
  nvcc flags (compile only: the CPU wheel has no CUDA libraries to link). It is
  compiled without the `#include <torch/types.h>` that load_inline prepends (the
  wrapper includes what it uses), which keeps this test around 15 s instead of 30.
- The adversarial CUDA candidates are what they claim: one is a compile error that
  nvcc reports as file(line), the other compiles (its fault is at run time).
- The Triton candidate defines ModelNew, keeps @triton.jit behind an import guard,
  and imports on a machine without Triton.
"""

from __future__ import annotations

import ast
import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CUDA_CANDIDATE = REPO / "examples" / "candidates" / "elementwise_chain_cuda.py"
TRITON_CANDIDATE = REPO / "examples" / "candidates" / "row_softmax_triton.py"
CHAIN_REFERENCE = REPO / "examples" / "elementwise_chain.py"
ADVERSARIAL = Path(__file__).resolve().parent / "adversarial"
NVCC_TIMEOUT_S = 240
# What load_inline prepends to cuda_sources, less the heavy torch/types.h.
CUDA_PREFIX = "#include <cuda.h>\n#include <cuda_runtime.h>\n"


def string_constants(path: Path) -> dict[str, str]:
    """Module-level `NAME = "..."` string constants, without importing the file."""
    constants: dict[str, str] = {}
    for node in ast.parse(path.read_text()).body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            constants[node.targets[0].id] = node.value.value
    return constants


def kernel_part(cuda_src: str) -> str:
    """The CUDA source up to its torch wrapper (the first line that mentions torch::)."""
    lines = cuda_src.splitlines(keepends=True)
    end = next((i for i, line in enumerate(lines) if "torch::" in line), len(lines))
    return "".join(lines[:end])


@pytest.fixture(scope="module")
def nvcc() -> str:
    found = shutil.which("nvcc") or (
        "/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None
    )
    if found is None:
        pytest.skip("nvcc is not installed")
    return found


def run_nvcc(nvcc: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [nvcc, *args], cwd=cwd, capture_output=True, text=True, timeout=NVCC_TIMEOUT_S, check=False
    )


def test_cuda_candidate_keeps_kernel_free_of_torch() -> None:
    constants = string_constants(CUDA_CANDIDATE)
    kernel = constants["CUDA_KERNEL_SRC"]
    assert "torch" not in kernel and "ATen" not in kernel and "c10" not in kernel
    assert "cudaStream_t stream" in kernel, "the launcher must take the stream from its caller"
    assert "float4" in kernel and "gridDim.x" in kernel  # vectorised, grid-stride
    assert "stark_elementwise_chain_launch" in constants["TORCH_WRAPPER_SRC"]


@pytest.mark.parametrize(
    "arch_flags",
    [["-arch=sm_90"], ["-gencode", "arch=compute_90,code=sm_90"]],
    ids=["arch-sm_90", "gencode-sm_90"],
)
def test_raw_kernel_compiles_for_sm90(nvcc: str, tmp_path: Path, arch_flags: list[str]) -> None:
    (tmp_path / "chain.cu").write_text(string_constants(CUDA_CANDIDATE)["CUDA_KERNEL_SRC"])
    proc = run_nvcc(nvcc, [*arch_flags, "-O3", "-c", "chain.cu", "-o", "chain.o"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "chain.o").stat().st_size > 0
    cuobjdump = shutil.which("cuobjdump") or str(Path(nvcc).with_name("cuobjdump"))
    if os.path.exists(cuobjdump):
        listing = subprocess.run(
            [cuobjdump, "--list-elf", "chain.o"], cwd=tmp_path, capture_output=True, text=True
        ).stdout
        assert "sm_90" in listing


HOST_MAIN = r"""
#include <cstdio>
#include <cstdlib>
int main(int argc, char** argv) {
    if (argc != 5) return 2;
    const stark_chain::ChainParams p{strtof(argv[1], nullptr), strtof(argv[2], nullptr),
                                     strtof(argv[3], nullptr), strtof(argv[4], nullptr)};
    float v;
    while (scanf("%f", &v) == 1) printf("%.9g\n", stark_chain::chain_one(v, p));
    return 0;
}
"""


def load_module(path: Path, name: str):  # noqa: ANN201 - a module
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_kernel_formula_matches_reference_on_host(nvcc: str, tmp_path: Path) -> None:
    """The same chain_one the GPU runs, built for the host, against the reference Model."""
    torch = pytest.importorskip("torch")
    source = string_constants(CUDA_CANDIDATE)["CUDA_KERNEL_SRC"] + HOST_MAIN
    (tmp_path / "host.cu").write_text(source)
    proc = run_nvcc(nvcc, ["-arch=sm_90", "-o", "host", "host.cu"], tmp_path)
    assert proc.returncode == 0, proc.stderr

    reference = load_module(CHAIN_REFERENCE, "stark_test_chain_reference")
    init = reference.get_init_inputs()
    model = reference.Model(*init)
    x = torch.cat(
        [
            torch.linspace(-8.0, 8.0, 2001),
            torch.randn(2000, generator=torch.Generator().manual_seed(0)) * 3,
        ]
    )
    x = torch.cat([x, torch.tensor([float("nan"), 40.0, -40.0, 0.0])])
    expected = model(x)
    feed = "\n".join(repr(float(v)) for v in x.tolist())
    run = subprocess.run(
        [str(tmp_path / "host"), *[repr(float(a)) for a in init]],
        input=feed, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    got = torch.tensor([float(line) for line in run.stdout.split()])
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5, equal_nan=True), (
        (got - expected).abs().nan_to_num().max()
    )
    assert math.isnan(float(got[-4])), "NaN must pass through the clamp like torch.clamp"


def torch_include_dirs() -> list[Path]:
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        pytest.skip("torch is not installed")
    include = Path(spec.origin).parent / "include"
    dirs = [include, include / "torch" / "csrc" / "api" / "include"]
    if not (include / "c10" / "cuda" / "CUDAStream.h").exists():
        pytest.skip("this torch build ships no c10/cuda headers")
    return dirs


@pytest.mark.slow
def test_torch_wrapper_compiles_like_load_inline(nvcc: str, tmp_path: Path) -> None:
    """Compile-only (-c): the CPU wheel has no libc10_cuda to link against."""
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS

    includes = torch_include_dirs()
    stub = tmp_path / "stub"
    macros = includes[0] / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h"
    if not macros.exists():  # generated at torch's build time; CPU wheels omit it
        (stub / "c10" / "cuda" / "impl").mkdir(parents=True)
        (stub / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").write_text(
            "#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n"
        )
    constants = string_constants(CUDA_CANDIDATE)
    (tmp_path / "cuda.cu").write_text(
        CUDA_PREFIX + constants["CUDA_KERNEL_SRC"] + constants["TORCH_WRAPPER_SRC"]
    )
    args = [
        "-c", "cuda.cu", "-o", "cuda.o", "-std=c++20", "-O3",
        "-gencode", "arch=compute_90,code=sm_90",
        "-DTORCH_EXTENSION_NAME=stark_compile_check", "-DTORCH_API_INCLUDE_EXTENSION_H",
        "-D_GLIBCXX_USE_CXX11_ABI=1", "-w", *COMMON_NVCC_FLAGS,
        *[f"-I{d}" for d in includes], f"-I{stub}",
    ]  # fmt: skip
    proc = run_nvcc(nvcc, args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_compile_error_candidate_fails_with_file_and_line(nvcc: str, tmp_path: Path) -> None:
    cuda_src = string_constants(ADVERSARIAL / "cuda_compile_error.py")["CUDA_SRC"]
    kernel = kernel_part(cuda_src)
    (tmp_path / "cuda.cu").write_text(kernel)
    proc = run_nvcc(nvcc, ["-arch=sm_90", "-c", "cuda.cu", "-o", "cuda.o"], tmp_path)
    assert proc.returncode != 0
    match = re.search(r"cuda\.cu\((\d+)\): error: identifier \"undeclared_scale\"", proc.stderr)
    assert match, proc.stderr
    line = kernel.splitlines()[int(match.group(1)) - 1]
    assert "undeclared_scale" in line


def test_illegal_access_candidate_compiles(nvcc: str, tmp_path: Path) -> None:
    """Its fault must be at run time (an illegal address), not at build time."""
    cuda_src = string_constants(ADVERSARIAL / "cuda_illegal_memory_access.py")["CUDA_SRC"]
    (tmp_path / "ima.cu").write_text(kernel_part(cuda_src))
    proc = run_nvcc(nvcc, ["-arch=sm_90", "-c", "ima.cu", "-o", "ima.o"], tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_cuda_candidate_constructor_matches_reference() -> None:
    def init_args(path: Path, class_name: str) -> list[str]:
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and node.name == class_name:
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                        return [a.arg for a in item.args.args[1:]]
        raise AssertionError(f"{path.name} has no {class_name}.__init__")

    assert init_args(CUDA_CANDIDATE, "ModelNew") == init_args(CHAIN_REFERENCE, "Model")


def test_triton_candidate_defines_guarded_jit_kernel_and_model_new() -> None:
    tree = ast.parse(TRITON_CANDIDATE.read_text())
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    assert "ModelNew" in classes
    top_level_imports = {
        alias.name for n in tree.body if isinstance(n, ast.Import) for alias in n.names
    }
    assert "triton" not in top_level_imports, "triton must be imported behind a guard"
    guarded = [n for n in tree.body if isinstance(n, ast.If)]
    jitted = [
        fn.name
        for block in guarded
        for fn in block.body
        if isinstance(fn, ast.FunctionDef)
        and any(ast.unparse(d) == "triton.jit" for d in fn.decorator_list)
    ]
    assert jitted, "a @triton.jit kernel must be defined (behind the import guard)"


def test_candidates_import_on_cpu_without_building() -> None:
    pytest.importorskip("torch")
    triton_module = load_module(TRITON_CANDIDATE, "stark_test_triton_candidate")
    if not triton_module.HAVE_TRITON:
        with pytest.raises(RuntimeError, match="Triton"):
            triton_module.ModelNew()
    cuda_module = load_module(CUDA_CANDIDATE, "stark_test_cuda_candidate")
    assert cuda_module._extension.cache_info().currsize == 0  # nothing built at import
