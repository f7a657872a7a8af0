"""The CUDA C code generator (engine/agents/kernels/cuda_codegen.py) on hand-made graphs, on
a machine with nvcc and no GPU.

- Every case's device code (the torch-free first part of `cuda_source`), for several
  schedules, compiles for sm_90 in ONE plain nvcc run, with no warnings.
- The per-element functions are `__host__ __device__`: compiled for the host from the same
  source, the formulas group (every unary kind with parameter variants and every binary op,
  NaN included) and the broadcast chain ((C, 1, 1) and (W,) operands: the index arithmetic)
  give torch's values within 1e-4 at every element.
- All cases' whole sources (one schedule each, in turn), host wrappers included, compile as
  ONE translation unit against this torch's headers with load_inline's nvcc flags (compile
  only: the CPU wheel has no CUDA libraries to link), and their declarations parse as C++.
  The slow part (~20 s).
- supports_cuda's reasons, and what the wrapper checks and launches.
- On a GPU (@gpu): one load_inline extension holding every group, against torch.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.agents.kernels.cuda_codegen import generate_cuda, supports_cuda
from engine.agents.kernels.gpu_lowering import plan_group
from engine.agents.kernels.gpu_plan import PointwisePlan
from engine.agents.kernels.ir import GeneratedGroup
from engine.agents.kernels.triton_codegen import supports_triton

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel_graphs import (  # noqa: E402
    FORMULA_BINARY,
    Case,
    GraphBuilder,
    all_cases,
    formula_inputs,
    formula_table,
    linear_add_relu_case,
    make_group,
    pointwise_bias_case,
    self_with,
    softmax_case,
)
from test_cuda_compile_only import run_nvcc, torch_include_dirs  # noqa: E402

SCHEDULES = [{"vector": 4}, {"vector": 1, "threads": 128, "rows": 2}, {"vector": 2, "rows": 4}]
TORCH_HEADER = "#include <ATen/core/Tensor.h>"  # where a source's host part starts
HOST_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def nvcc() -> str:
    found = shutil.which("nvcc") or shutil.which("/usr/local/cuda/bin/nvcc")
    if found is None:
        pytest.skip("nvcc is not installed")
    return found


def renamed(case: Case, number: int) -> Case:
    """The case under group id g<number>, so many groups share one translation unit."""
    return dataclasses.replace(case, group=dataclasses.replace(case.group, id=f"g{number}"))


def generated_groups(every_schedule: bool = True) -> list[tuple[Case, GeneratedGroup]]:
    """Every case under every schedule, or (every_schedule=False) under one each, in turn."""
    out = []
    for at, case in enumerate(all_cases().values()):
        for schedule in SCHEDULES if every_schedule else [SCHEDULES[at % len(SCHEDULES)]]:
            numbered = renamed(case, len(out))
            out.append((numbered, generate_cuda(numbered.graph, numbered.group, schedule)))
    return out


def device_part(source: str) -> str:
    assert TORCH_HEADER in source
    return source.split(TORCH_HEADER)[0]


def test_device_code_of_every_group_compiles_for_sm90(nvcc: str, tmp_path: Path) -> None:
    groups = generated_groups()
    (tmp_path / "kernels.cu").write_text("\n".join(device_part(g.cuda_source) for _, g in groups))
    proc = run_nvcc(nvcc, ["-arch=sm_90", "-O3", "-c", "kernels.cu", "-o", "kernels.o"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "warning" not in proc.stderr.lower(), proc.stderr[-4000:]
    device_code = (tmp_path / "kernels.cu").read_text()
    assert "ATen" not in device_code and "at::" not in device_code and "c10" not in device_code


def host_driver(case: Case, generated: GeneratedGroup, feeds: dict[str, Any]) -> str:
    """A host main() that reads the kernel's inputs from stdin and prints every output of
    the group's per-element function at every element, one line per element."""
    plan = plan_group(case.graph, case.group)
    assert isinstance(plan, PointwisePlan)
    direct = [ld for ld in plan.loads if ld.terms is None]
    gathered = [ld for ld in plan.loads if ld.terms is not None]
    lines = ["#include <cstdio>", "int main() {"]
    for load in plan.loads:
        size = feeds[load.tensor].numel()
        lines.append(f"    static float {load.tensor}[{size}];")
        lines.append(
            f'    for (int k = 0; k < {size}; ++k) if (scanf("%f", &{load.tensor}[k]) != 1) return 2;'
        )
    outs = [f"o{k}" for k in range(len(plan.stores))]
    args = ["i", *[f"{ld.tensor}[i]" for ld in direct], *[ld.tensor for ld in gathered], *outs]
    lines += [
        f"    for (long long i = 0; i < {plan.numel}; ++i) {{",
        f"        float {', '.join(outs)};",
        f"        {plan.title}_element({', '.join(args)});",
        f"        printf(\"{' '.join(['%.9g'] * len(outs))}\\n\", {', '.join(f'(double){o}' for o in outs)});",
        "    }",
        "    return 0;",
        "}",
    ]  # fmt: skip
    return device_part(generated.cuda_source) + "\n".join(lines) + "\n"


def run_on_host(nvcc: str, tmp_path: Path, case: Case, feeds: dict[str, Any]) -> Any:
    import torch

    generated = generate_cuda(case.graph, case.group, {"vector": 4})
    (tmp_path / "host.cu").write_text(host_driver(case, generated, feeds))
    proc = run_nvcc(nvcc, ["-arch=sm_90", "-o", "host", "host.cu"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    plan = plan_group(case.graph, case.group)
    assert isinstance(plan, PointwisePlan)
    feed = "\n".join(
        repr(float(v)) for ld in plan.loads for v in feeds[ld.tensor].flatten().tolist()
    )
    run = subprocess.run(
        [str(tmp_path / "host")], input=feed, capture_output=True, text=True,
        timeout=HOST_TIMEOUT_S, check=True,
    )  # fmt: skip
    rows = [[float(v) for v in line.split()] for line in run.stdout.splitlines()]
    return torch.tensor(rows).T  # one row per output


def test_every_formula_matches_torch_on_the_host(nvcc: str, tmp_path: Path) -> None:
    import torch

    case = all_cases()["formulas"]
    feeds = formula_inputs()
    got = run_on_host(nvcc, tmp_path, case, feeds)
    expected = case.reference(feeds, {})
    labels = [f"{kind} {params}" for kind, params, _ in formula_table()] + list(FORMULA_BINARY)
    assert got.shape[0] == len(labels)
    for label, g, e in zip(labels, got, expected, strict=True):
        close = torch.isclose(g, e, atol=1e-4, rtol=1e-4, equal_nan=True)
        assert close.all(), (
            f"{label}: x={feeds['x'][~close][:4]} got {g[~close][:4]} want {e[~close][:4]}"
        )


def test_broadcast_chain_matches_torch_on_the_host(nvcc: str, tmp_path: Path) -> None:
    import torch

    case = pointwise_bias_case((2, 3, 9, 11))
    feeds, params = case.inputs()
    got = run_on_host(nvcc, tmp_path, case, {**feeds, **params})
    expected = case.reference(feeds, params)
    assert torch.allclose(got[0].view(expected.shape), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_all_groups_compile_as_one_translation_unit_with_torch(nvcc: str, tmp_path: Path) -> None:
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS

    includes = torch_include_dirs()
    stub = tmp_path / "stub"
    if not (includes[0] / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").exists():
        (stub / "c10" / "cuda" / "impl").mkdir(parents=True)  # generated at torch's build time
        (stub / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").write_text(
            "#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n"
        )
    groups = generated_groups(every_schedule=False)  # the device code of the rest: above
    (tmp_path / "all.cu").write_text("\n".join(g.cuda_source for _, g in groups))
    (tmp_path / "decls.cpp").write_text("\n".join(g.cpp_source for _, g in groups))
    args = [
        "-c", "all.cu", "-o", "all.o", "-std=c++20", "-O3", "-gencode", "arch=compute_90,code=sm_90",
        "-DTORCH_EXTENSION_NAME=stark_codegen_check", "-DTORCH_API_INCLUDE_EXTENSION_H",
        "-D_GLIBCXX_USE_CXX11_ABI=1", *COMMON_NVCC_FLAGS, *[f"-I{d}" for d in includes], f"-I{stub}",
    ]  # fmt: skip
    proc = run_nvcc(nvcc, args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ours = [line for line in proc.stderr.splitlines() if "all.cu(" in line and "warning" in line]
    assert not ours, "\n".join(ours)
    # the declarations parse on their own (as load_inline's cpp file holds them)
    host = subprocess.run(
        ["g++", "-std=c++17", "-fsyntax-only", *[f"-I{d}" for d in includes], "decls.cpp"],
        cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert host.returncode == 0, host.stderr[-4000:]


def test_wrapper_checks_inputs_and_launches_one_block_per_rows() -> None:
    case = softmax_case()
    one = generate_cuda(case.graph, case.group, {})
    assert one.functions == ("g0_softmax",) and one.call == "_stark_ext.g0_softmax(x)"
    assert 'stark_check("g0_softmax", "x", x, {6, 37}, x);' in one.cuda_source
    assert "g0_softmax_kernel<<<6, 256, 0, stream>>>" in one.cuda_source
    two = generate_cuda(case.graph, case.group, {"rows": 4, "threads": 128})
    assert "g0_softmax_kernel<<<2, 128, 0, stream>>>" in two.cuda_source
    assert one.cpp_source.strip().endswith("at::Tensor g0_softmax(at::Tensor x);")


def test_pointwise_vector_schedule_picks_float4_with_a_scalar_tail() -> None:
    case = pointwise_bias_case()
    vec4 = generate_cuda(case.graph, case.group, {"vector": 4}).cuda_source
    assert "g0_mul_gelu_add_mul_sub_vec4_kernel" in vec4 and "float4" in vec4
    assert "% 16 == 0" in vec4 and "if (done < n)" in vec4
    scalar = generate_cuda(case.graph, case.group, {"vector": 1}).cuda_source
    assert "vec" not in scalar.split(TORCH_HEADER)[0].replace("vector", "")


def test_epilogue_keeps_the_anchor_as_an_aten_call_and_writes_in_place() -> None:
    case = linear_add_relu_case()
    source = generate_cuda(case.graph, case.group, {}).cuda_source
    assert "at::Tensor gemm = at::linear(x, gemm_weight, gemm_bias).contiguous();" in source
    assert "float* io_gemm" in source and "at::empty" not in source.split("at::linear")[1]
    assert "#include <ATen/ops/linear.h>" in source


def _conv_module_case() -> Case:
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    attrs = {"weight": "self.conv.weight", "bias": "self.conv.bias"}
    conv = b.op("conv", "conv2d", x, shape=(1, 4, 6, 6), attrs=attrs, target="self.conv")
    relu = b.op("relu", "relu", conv, shape=(1, 4, 6, 6))
    graph = b.graph(relu)
    return Case(
        "conv",
        graph,
        make_group(graph, "g0", "epilogue", [conv, relu], conv),
        {},
        lambda f, p: None,
    )


def _half_case() -> Case:
    b = GraphBuilder()
    x = b.input("x", (8,), dtype="float16")
    relu = b.op("relu", "relu", x, shape=(8,), dtype="float16")
    graph = b.graph(relu)
    return Case("half", graph, make_group(graph, "g0", "pointwise", [relu]), {}, lambda f, p: None)


def _argmax_case() -> Case:
    b = GraphBuilder()
    x = b.input("x", (4, 6))
    index = b.op("a", "argmax", x, shape=(4,), dim=(1,), keepdim=False, dtype="int64")
    graph = b.graph(index)
    return Case(
        "argmax", graph, make_group(graph, "g0", "reduction", [index], index), {}, lambda f, p: None
    )


@pytest.mark.parametrize(
    ("make", "reason", "triton_ok"),
    [
        (_half_case, "float32 only", True),
        (_conv_module_case, "not captured", True),
        (_argmax_case, "int64", False),
    ],
    ids=["float16", "conv-module", "argmax"],
)
def test_unsupported_groups_say_why(make: Any, reason: str, triton_ok: bool) -> None:
    case = make()
    why = supports_cuda(case.graph, case.group)
    assert why is not None and reason in why, why
    assert (supports_triton(case.graph, case.group) is None) == triton_ok
    with pytest.raises(ValueError, match="cannot be written in CUDA C"):
        generate_cuda(case.graph, case.group)


@pytest.mark.gpu
def test_one_extension_with_every_group_matches_torch_on_the_gpu(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from torch.utils.cpp_extension import load_inline

    groups = generated_groups()
    extension = load_inline(
        name="stark_cuda_codegen_test",
        cpp_sources="\n".join(g.cpp_source for _, g in groups),
        cuda_sources="\n".join(g.cuda_source for _, g in groups),
        functions=[name for _, g in groups for name in g.functions],
        build_directory=str(tmp_path),
        verbose=False,
    )
    for case, generated in groups:
        feeds, params = (formula_inputs(), {}) if case.name == "formulas" else case.inputs()
        expected = case.reference(feeds, params)
        scope = {k: v.cuda() for k, v in feeds.items()}
        scope |= {
            "_stark_ext": extension,
            "self": self_with({k: v.cuda() for k, v in params.items()}),
        }
        got = eval(generated.call, scope)  # noqa: S307 - the generated call expression
        got = got if isinstance(got, tuple) else (got,)
        expected = expected if isinstance(expected, tuple) else (expected,)
        for g, e in zip(got, expected, strict=True):
            assert torch.allclose(g.cpu(), e, atol=1e-4, rtol=1e-4, equal_nan=True), case.name
