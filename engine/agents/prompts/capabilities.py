"""What the prompts tell a model it may use on each device, and what it must not do.

One table, read by both the prompt text (`Target.describe`) and the tests
(tests/bench/test_prompt_capabilities.py run a candidate for every entry through the real
benchmarker), so the prompt cannot offer what the harness rejects. The harness's rules that
shape these lines (docs/benchmarker.md):

- torch's process-wide backend switches (`torch.backends.cudnn.benchmark`, TF32,
  `torch.set_float32_matmul_precision`, ...) are compared before and after the candidate
  runs: a switch left changed is `backend_settings_changed`. They may be flipped only inside
  `forward` and restored before it returns.
- outputs must be new tensors (`output_aliases_input`) and inputs must come back unchanged
  (`modified_inputs`), so in-place work is only for tensors `forward` made itself.
- outputs must have the reference's dtype and match within the tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass

Device = str  # "cpu" | "cuda"
CPU = frozenset({"cpu"})
CUDA = frozenset({"cuda"})
BOTH = CPU | CUDA


@dataclass(frozen=True, slots=True)
class Capability:
    """One "What you may use" bullet; `needs` names an optional package it depends on."""

    key: str
    devices: frozenset[str]
    text: str
    needs: str | None = None


@dataclass(frozen=True, slots=True)
class Restriction:
    """One "Do not" bullet: something the benchmarker rejects, stated before it happens."""

    key: str
    devices: frozenset[str]
    text: str


CAPABILITIES: tuple[Capability, ...] = (
    Capability(
        "cpp_extension",
        CPU,
        "C++ kernels compiled with `torch.utils.cpp_extension.load_inline(cpp_sources=..., "
        "functions=..., extra_cflags=['-O3', '-march=native', '-fopenmp'], "
        "extra_ldflags=['-fopenmp'])` (OpenMP, SIMD, cache blocking)",
    ),
    Capability(
        "cuda_extension",
        CUDA,
        "custom CUDA C++ kernels compiled with "
        "`torch.utils.cpp_extension.load_inline(cpp_sources=..., cuda_sources=..., "
        "functions=...)`",
    ),
    Capability(
        "triton",
        CUDA,
        "Triton kernels (`import triton`, `import triton.language as tl`, `@triton.jit`)",
        needs="triton",
    ),
    Capability(
        "torch_compile",
        CPU,
        "`torch.compile` (mode `default` or `max-autotune-no-cudagraphs`; inductor generates "
        "fused C++/OpenMP loops for CPU)",
    ),
    Capability(
        "torch_compile",
        CUDA,
        "`torch.compile` (modes `default`, `reduce-overhead`, `max-autotune`)",
    ),
    Capability(
        "cuda_graphs",
        CUDA,
        "CUDA graphs: capture forward into a `torch.cuda.CUDAGraph` after a few warm-up "
        "calls, copy each call's inputs into the static input buffers, replay, and return a "
        "`.clone()` of the static output",
    ),
    Capability(
        "scoped_backend_switches",
        CUDA,
        "`torch.backends.cudnn.benchmark = True` or TF32 (`torch.backends.cuda.matmul."
        "allow_tf32`, `torch.backends.cudnn.allow_tf32`) only *inside* `forward`: save the "
        "old values, set them, run, and restore them in a `finally:` before `forward` "
        "returns (TF32 is lower precision: only where the result stays within the tolerance)",
    ),
    Capability(
        "channels_last",
        BOTH,
        "channels_last memory format for convolutions (`self.to(memory_format="
        "torch.channels_last)` in `__init__`, `x.contiguous(memory_format="
        "torch.channels_last)` for 4-D inputs)",
    ),
    Capability(
        "inference_mode",
        BOTH,
        "`torch.inference_mode()` around the work in `forward` (no autograd bookkeeping)",
    ),
    Capability(
        "out_variants",
        BOTH,
        "in-place ops and `out=` variants on tensors that `forward` allocated itself",
    ),
    Capability(
        "better_ops",
        BOTH,
        "better-suited torch ops (e.g. `torch.addmm` for a matmul plus bias, "
        "`torch.baddbmm`, fused `F.scaled_dot_product_attention`)",
    ),
    Capability(
        "lower_precision",
        BOTH,
        "lower precision (fp16/bf16 compute, `torch.autocast`) only where the result stays "
        "within the tolerance; cast the outputs back to the reference's dtype",
    ),
)

RESTRICTIONS: tuple[Restriction, ...] = (
    Restriction(
        "process_wide_switches",
        BOTH,
        "rejected: a process-wide switch left changed after `forward` returns (`torch.backends.*` "
        "flags such as `cudnn.benchmark` or TF32, `torch.set_float32_matmul_precision`, "
        "`torch.use_deterministic_algorithms`), e.g. one set in `__init__` or at import: it "
        "would change the reference's kernels too (`backend_settings_changed`)",
    ),
    Restriction(
        "modified_inputs",
        BOTH,
        "rejected: writing into an input tensor (`modified_inputs`)",
    ),
    Restriction(
        "output_aliases_input",
        BOTH,
        "rejected: returning an input or a view of one: outputs must be new tensors "
        "(`output_aliases_input`)",
    ),
    Restriction(
        "output_dtype",
        BOTH,
        "rejected: outputs of another dtype, shape or device than the reference's",
    ),
    Restriction(
        "streams",
        CUDA,
        "extra CUDA streams: do not create them; work still running on one when `forward` "
        "returns is caught (`side_stream_suspected`) and timed by the host clock around a "
        "device-wide sync, so it gains nothing",
    ),
)


def capabilities_for(device: Device, installed: frozenset[str] = frozenset()) -> list[Capability]:
    """The capabilities a prompt for `device` offers; those that `need` a package not in
    `installed` are left out (the prompt then says the package is missing)."""
    return [
        c for c in CAPABILITIES if device in c.devices and (c.needs is None or c.needs in installed)
    ]


def missing_for(device: Device, installed: frozenset[str] = frozenset()) -> list[Capability]:
    """Capabilities of `device` that are not offered because their package is missing."""
    return [
        c
        for c in CAPABILITIES
        if device in c.devices and c.needs is not None and c.needs not in installed
    ]


def restrictions_for(device: Device) -> list[Restriction]:
    return [r for r in RESTRICTIONS if device in r.devices]
