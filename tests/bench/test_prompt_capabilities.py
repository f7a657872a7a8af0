"""The prompts and the benchmarker agree (issue 11 item 6).

For every capability a prompt offers (engine/prompts/capabilities.py, the table the prompt
text is built from), a candidate that uses it the way the prompt describes is accepted by
the real benchmarker; for every restriction the prompt states, a candidate that breaks it is
rejected for that reason. CPU entries run here; CUDA entries run on a GPU (`-m gpu`), and
those whose pattern is device-agnostic (scoped backend switches, channels_last) run on the
CPU as well. Adding a capability without an example here fails
`test_every_capability_and_restriction_has_an_example`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from engine.agents.prompts import Target
from engine.agents.prompts.capabilities import (
    CAPABILITIES,
    RESTRICTIONS,
    capabilities_for,
    missing_for,
    restrictions_for,
)
from engine.bench import Benchmarker, EvalConfig

pytestmark = pytest.mark.timeout(300)

POINTWISE = """
import torch
import torch.nn as nn


class Model(nn.Module):
    def forward(self, x):
        return torch.relu(x) * 2.0 + 1.0


def get_inputs():
    return [torch.randn(128, 256)]


def get_init_inputs():
    return []
"""

LINEAR = """
import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(64, 32) * 0.1)
        self.b = nn.Parameter(torch.randn(32))

    def forward(self, x):
        return torch.matmul(x, self.w) + self.b


def get_inputs():
    return [torch.randn(128, 64)]


def get_init_inputs():
    return []
"""

CONV = """
import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x))


def get_inputs():
    return [torch.randn(2, 3, 16, 16)]


def get_init_inputs():
    return []
"""

HEAD = "import torch\nimport torch.nn as nn\n\n\n"


def _module_new(forward_body: str, init_body: str = "") -> str:
    init = (
        f"    def __init__(self):\n        super().__init__()\n{init_body}\n" if init_body else ""
    )
    return f"{HEAD}class ModelNew(nn.Module):\n{init}    def forward(self, x):\n{forward_body}\n"


CONV_INIT = "        self.conv = nn.Conv2d(3, 8, 3, padding=1)\n"


@dataclass(frozen=True)
class Example:
    reference: str
    candidate: str
    overrides: dict[str, Any] = field(default_factory=dict)
    slow: bool = False
    # A CUDA capability whose pattern is device-agnostic is also checked on the CPU.
    cpu_checkable: bool = False


CPP_EXTENSION = (
    HEAD
    + '''from torch.utils.cpp_extension import load_inline

SOURCE = r"""
#include <torch/extension.h>

torch::Tensor relu_scale_shift(torch::Tensor x) {
    TORCH_CHECK(x.scalar_type() == torch::kFloat32, "float32 only");
    torch::Tensor input = x.contiguous();
    torch::Tensor out = torch::empty_like(input);
    const float* in = input.data_ptr<float>();
    float* dst = out.data_ptr<float>();
    const int64_t n = input.numel();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
        const float v = in[i] > 0.0f ? in[i] : 0.0f;
        dst[i] = v * 2.0f + 1.0f;
    }
    return out;
}
"""

ext = load_inline(
    name="stark_capability_cpp",
    cpp_sources=SOURCE,
    functions=["relu_scale_shift"],
    extra_cflags=["-O3", "-march=native", "-fopenmp"],
    extra_ldflags=["-fopenmp"],
    verbose=False,
)


class ModelNew(nn.Module):
    def forward(self, x):
        return ext.relu_scale_shift(x)
'''
)

CUDA_EXTENSION = (
    HEAD
    + '''from torch.utils.cpp_extension import load_inline

CUDA_SOURCE = r"""
#include <torch/extension.h>

__global__ void relu_scale_shift_kernel(const float* in, float* out, int64_t n) {
    const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < n) {
        const float v = in[i] > 0.0f ? in[i] : 0.0f;
        out[i] = v * 2.0f + 1.0f;
    }
}

torch::Tensor relu_scale_shift(torch::Tensor x) {
    TORCH_CHECK(x.is_cuda() && x.scalar_type() == torch::kFloat32, "float32 CUDA only");
    torch::Tensor input = x.contiguous();
    torch::Tensor out = torch::empty_like(input);
    const int64_t n = input.numel();
    const int threads = 256;
    const int blocks = (int)((n + threads - 1) / threads);
    relu_scale_shift_kernel<<<blocks, threads>>>(input.data_ptr<float>(), out.data_ptr<float>(), n);
    return out;
}
"""

ext = load_inline(
    name="stark_capability_cuda",
    cpp_sources="torch::Tensor relu_scale_shift(torch::Tensor x);",
    cuda_sources=CUDA_SOURCE,
    functions=["relu_scale_shift"],
    verbose=False,
)


class ModelNew(nn.Module):
    def forward(self, x):
        return ext.relu_scale_shift(x)
'''
)

TRITON = (
    HEAD
    + """import triton
import triton.language as tl


@triton.jit
def relu_scale_shift_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    x = tl.load(x_ptr + offsets, mask=mask)
    tl.store(out_ptr + offsets, tl.maximum(x, 0.0) * 2.0 + 1.0, mask=mask)


class ModelNew(nn.Module):
    def forward(self, x):
        x = x.contiguous()
        out = torch.empty_like(x)
        n = x.numel()
        relu_scale_shift_kernel[(triton.cdiv(n, 1024),)](x, out, n, BLOCK=1024)
        return out
"""
)

CUDA_GRAPH = _module_new(
    """        key = (tuple(x.shape), x.dtype, x.device)
        if self.graph is None or key != self.key:
            self.static_x = x.clone()
            for _ in range(3):  # warm-up before capture
                torch.relu(self.static_x) * 2.0 + 1.0
            torch.cuda.synchronize()
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.static_out = torch.relu(self.static_x) * 2.0 + 1.0
            self.key = key
        self.static_x.copy_(x)
        self.graph.replay()
        return self.static_out.clone()""",
    "        self.graph = None\n        self.key = None\n",
)

SCOPED_SWITCHES = _module_new(
    """        saved = (
            torch.backends.cudnn.benchmark,
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32,
        )
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        try:
            return torch.relu(self.conv(x))
        finally:
            (
                torch.backends.cudnn.benchmark,
                torch.backends.cuda.matmul.allow_tf32,
                torch.backends.cudnn.allow_tf32,
            ) = saved""",
    CONV_INIT,
)

CHANNELS_LAST = _module_new(
    """        x = x.contiguous(memory_format=torch.channels_last)
        return torch.relu(self.conv(x))""",
    CONV_INIT + "        self.to(memory_format=torch.channels_last)\n",
)

COMPILED = _module_new(
    "        return self.run(x)",
    "        self.run = torch.compile(self.eager, mode=MODE, dynamic=False)\n\n"
    "    def eager(self, x):\n        return torch.relu(x) * 2.0 + 1.0\n",
)

TF32_TOLERANCE = {"atol": 1e-2, "rtol": 1e-2}  # TF32 is lower precision: a looser tolerance

COMMON: dict[str, Example] = {
    "inference_mode": Example(
        POINTWISE,
        _module_new(
            "        with torch.inference_mode():\n            return torch.relu(x) * 2.0 + 1.0"
        ),
    ),
    "out_variants": Example(
        POINTWISE,
        _module_new(
            "        out = torch.empty_like(x)\n"
            "        torch.clamp(x, min=0.0, out=out)\n"
            "        return out.mul_(2.0).add_(1.0)"
        ),
    ),
    "better_ops": Example(
        LINEAR,
        _module_new(
            "        return torch.addmm(self.b, x, self.w)",
            "        self.w = nn.Parameter(torch.randn(64, 32) * 0.1)\n"
            "        self.b = nn.Parameter(torch.randn(32))\n",
        ),
    ),
    "lower_precision": Example(
        POINTWISE,
        _module_new("        return (torch.relu(x.half()) * 2.0 + 1.0).to(x.dtype)"),
        overrides={"atol": 1e-2, "rtol": 1e-2},  # the prompt's tolerance is what counts
    ),
    "channels_last": Example(CONV, CHANNELS_LAST),
}

EXAMPLES: dict[tuple[str, str], Example] = {
    **{("cpu", key): example for key, example in COMMON.items()},
    **{("cuda", key): example for key, example in COMMON.items()},
    ("cpu", "cpp_extension"): Example(POINTWISE, CPP_EXTENSION, slow=True),
    ("cpu", "torch_compile"): Example(POINTWISE, COMPILED.replace("MODE", '"default"'), slow=True),
    ("cuda", "cuda_extension"): Example(POINTWISE, CUDA_EXTENSION, slow=True),
    ("cuda", "triton"): Example(POINTWISE, TRITON),
    ("cuda", "torch_compile"): Example(
        POINTWISE, COMPILED.replace("MODE", '"reduce-overhead"'), slow=True
    ),
    ("cuda", "cuda_graphs"): Example(POINTWISE, CUDA_GRAPH),
    ("cuda", "scoped_backend_switches"): Example(
        CONV, SCOPED_SWITCHES, overrides=TF32_TOLERANCE, cpu_checkable=True
    ),
}

# Each stated restriction, broken: (reference, candidate, phrase expected in the error or flag).
BROKEN: dict[str, tuple[str, str, str]] = {
    "process_wide_switches": (
        CONV,
        _module_new(
            "        return torch.relu(self.conv(x))",
            CONV_INIT + "        torch.backends.cudnn.benchmark = True  # left on: rejected\n",
        ),
        "backend_settings_changed",
    ),
    "modified_inputs": (
        POINTWISE,
        _module_new("        return x.relu_() * 2.0 + 1.0"),
        "modified_inputs",
    ),
    "output_aliases_input": (
        POINTWISE.replace("torch.relu(x) * 2.0 + 1.0", "x[:, :16] * 1.0"),
        _module_new("        return x[:, :16]"),
        "aliases an input",
    ),
    "output_dtype": (
        POINTWISE,
        _module_new("        return (torch.relu(x) * 2.0 + 1.0).double()"),
        "dtype torch.float64 != expected torch.float32",
    ),
}
CUDA_ONLY_RESTRICTIONS = {"streams"}  # checked by the GPU suite (side-stream adversary)

QUICK = {
    "correctness_trials": 2,
    "timing_trials": 3,
    "warmup_s": 0.01,
    "timing_budget_s": 0.5,
    "compile_timeout_s": 240.0,
    "run_timeout_s": 30.0,
    "num_threads": 2,
}


def _evaluate(bench: Benchmarker, device: str, example: Example) -> Any:
    config = EvalConfig(device=device, **{**QUICK, **example.overrides})  # type: ignore[arg-type]
    return bench.evaluate(example.reference, example.candidate, config)


def _params(device: str, *, cpu_run: bool = False) -> list[Any]:
    """One pytest param per capability of `device` (Triton counted as installed)."""
    params = []
    for capability in capabilities_for(device, frozenset({"triton"})):
        example = EXAMPLES.get((device, capability.key))
        if example is None or (cpu_run and not example.cpu_checkable):
            continue
        marks = [pytest.mark.slow] if example.slow else []
        params.append(pytest.param(capability.key, marks=marks, id=capability.key))
    return params


# --- the table and the prompt ------------------------------------------------------------


def test_every_capability_and_restriction_has_an_example() -> None:
    offered = {
        (device, c.key)
        for device in ("cpu", "cuda")
        for c in capabilities_for(device, frozenset({"triton"}))
    }
    assert offered == set(EXAMPLES), "capabilities and their examples have drifted apart"
    assert {r.key for r in RESTRICTIONS} == set(BROKEN) | CUDA_ONLY_RESTRICTIONS
    assert len({(d, c.key) for c in CAPABILITIES for d in c.devices}) == sum(
        len(c.devices) for c in CAPABILITIES
    ), "a capability key appears twice for one device"


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("triton", [False, True])
def test_the_prompt_is_built_from_the_table(device: str, triton: bool) -> None:
    text = Target(device, "test device", 2, triton).describe()
    installed = frozenset({"triton"} if triton else set())
    for capability in capabilities_for(device, installed):
        assert capability.text in text
    for capability in missing_for(device, installed):
        assert capability.text not in text and f"NOT available here: {capability.key}" in text
    for restriction in restrictions_for(device):
        assert restriction.text in text
    other = "cuda" if device == "cpu" else "cpu"
    for capability in capabilities_for(other, frozenset({"triton"})):
        if device not in capability.devices:
            assert capability.text not in text


SWITCHES = re.compile(
    r"cudnn\.benchmark|allow_tf32|set_float32_matmul_precision|use_deterministic_algorithms"
)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_the_prompt_offers_no_process_wide_switch_unscoped(device: str) -> None:
    """The old CUDA prompt offered `torch.backends.cudnn.benchmark` bare: set the way
    anyone would (once, in __init__), it is rejected as backend_settings_changed."""
    text = Target(device, "test device", 2, True).describe()
    offered = text.split("## What you may use", 1)[1].split("## What the benchmarker", 1)[0]
    for line in offered.splitlines():
        if SWITCHES.search(line):
            assert "inside" in line and "restore" in line and "finally" in line, line


# --- the real benchmarker -----------------------------------------------------------------


@pytest.mark.parametrize("key", _params("cpu"))
def test_cpu_capability_is_accepted(benchmarker: Benchmarker, key: str) -> None:
    result = _evaluate(benchmarker, "cpu", EXAMPLES[("cpu", key)])
    assert result.runnable, (key, result.stage, result.error)
    assert "backend_settings_changed" not in result.flags


@pytest.mark.parametrize("key", _params("cuda", cpu_run=True))
def test_cuda_capability_pattern_is_accepted_on_cpu(benchmarker: Benchmarker, key: str) -> None:
    """Scoped backend switches and channels_last mean the same on either device: the
    harness's settings check runs on the CPU too."""
    result = _evaluate(benchmarker, "cpu", EXAMPLES[("cuda", key)])
    assert result.runnable, (key, result.stage, result.error)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("key", _params("cuda"))
def test_cuda_capability_is_accepted(benchmarker: Benchmarker, key: str) -> None:
    if key == "triton":
        pytest.importorskip("triton")
    result = _evaluate(benchmarker, "cuda", EXAMPLES[("cuda", key)])
    assert result.runnable, (key, result.stage, result.error)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["default", "max-autotune"])
def test_cuda_compile_modes_are_accepted(benchmarker: Benchmarker, mode: str) -> None:
    """Every mode the CUDA prompt names (reduce-overhead is the torch_compile example)."""
    example = Example(POINTWISE, COMPILED.replace("MODE", f'"{mode}"'))
    result = _evaluate(benchmarker, "cuda", example)
    assert result.runnable, (mode, result.stage, result.error)


@pytest.mark.parametrize("key", sorted(BROKEN))
def test_a_broken_restriction_is_rejected(benchmarker: Benchmarker, key: str) -> None:
    reference, candidate, phrase = BROKEN[key]
    config = EvalConfig(device="cpu", **QUICK)  # type: ignore[arg-type]
    result = benchmarker.evaluate(reference, candidate, config)
    assert not result.runnable, key
    assert phrase in (result.error or "") or phrase in result.flags, (key, result.error)


def test_the_offline_agents_scoped_switches_pass_the_settings_check(
    benchmarker: Benchmarker,
) -> None:
    """The offline agent's `cudnn_benchmark` and `tf32` transformations follow the same
    rule as the prompt: set inside forward, restored in `finally:`."""
    from engine.agents.render import render_module

    candidate = render_module(CONV, ["cudnn_benchmark", "tf32"], title="scoped switches")
    result = _evaluate(benchmarker, "cpu", Example(CONV, candidate, overrides=TF32_TOLERANCE))
    assert result.runnable, (result.stage, result.error)
