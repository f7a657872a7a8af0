"""The fixed parts of the generated CUDA C: headers, the helpers every group shares (behind
include guards, since all groups' sources go into one translation unit), the kernels'
pointer parameters, the host wrapper's input checks and the at:: calls of an epilogue's
anchor.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.agents.kernels.gpu_plan import AnchorCall, PointwisePlan, RowPlan

# Torch-free: the kernels and their helpers compile with plain nvcc (and the per-element
# functions for the host too, which is how the tests check them on a CPU).
DEVICE_PRELUDE = r"""#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#ifndef STARK_GPU_DEVICE_HELPERS_
#define STARK_GPU_DEVICE_HELPERS_
// NaN-propagating max/min, as torch.maximum/minimum and amax/amin.
__host__ __device__ __forceinline__ float stark_maximum(float a, float b) {
    return (a > b || a != a) ? a : b;
}
__host__ __device__ __forceinline__ float stark_minimum(float a, float b) {
    return (a < b || a != a) ? a : b;
}
struct StarkSum {
    __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
    __device__ __forceinline__ static float identity() { return 0.0f; }
};
struct StarkMax {
    __device__ __forceinline__ float operator()(float a, float b) const {
        return stark_maximum(a, b);
    }
    __device__ __forceinline__ static float identity() { return -INFINITY; }
};
struct StarkMin {
    __device__ __forceinline__ float operator()(float a, float b) const {
        return stark_minimum(a, b);
    }
    __device__ __forceinline__ static float identity() { return INFINITY; }
};

// v combined over the whole block (warp shuffles, then one float per warp in `scratch`,
// 32 floats of shared memory); every thread gets the result. blockDim.x: a multiple of 32.
template <typename Op>
__device__ __forceinline__ float stark_block_reduce(float v, float* scratch, Op op) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps = (blockDim.x + 31) >> 5;
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
    }
    __syncthreads();  // the previous reduction's result may still be being read
    if (lane == 0) {
        scratch[warp] = v;
    }
    __syncthreads();
    if (warp == 0) {
        v = lane < warps ? scratch[lane] : Op::identity();
#pragma unroll
        for (int offset = 16; offset > 0; offset >>= 1) {
            v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
        }
        if (lane == 0) {
            scratch[0] = v;
        }
    }
    __syncthreads();
    return scratch[0];
}
#endif  // STARK_GPU_DEVICE_HELPERS_
"""

# The host side: torch headers, launch sizing and the wrappers' input checks.
HOST_PRELUDE = r"""#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <tuple>

#ifndef STARK_GPU_HOST_HELPERS_
#define STARK_GPU_HOST_HELPERS_
// Blocks for `work` items at `threads` a block, capped at 8 a multiprocessor: the kernels'
// grid-stride loops cover the rest.
static inline unsigned int stark_grid(int64_t work, int threads) {
    int device = 0;
    int sms = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
        sms <= 0) {
        sms = 132;
    }
    const int64_t wanted = (work + threads - 1) / threads;
    const int64_t cap = static_cast<int64_t>(sms) * 8;
    return static_cast<unsigned int>(std::max<int64_t>(1, std::min(wanted, cap)));
}

// An input the kernel reads: on the device of `like`, float32, contiguous, of `shape`.
static void stark_check(const char* fn, const char* name, const at::Tensor& t,
                        c10::IntArrayRef shape, const at::Tensor& like) {
    TORCH_CHECK(t.is_cuda(), fn, ": ", name, " must be a CUDA tensor, got one on ", t.device());
    TORCH_CHECK(t.device() == like.device(), fn, ": ", name, " is on ", t.device(),
                ", the other inputs on ", like.device());
    TORCH_CHECK(t.scalar_type() == at::kFloat, fn, ": ", name, " must be float32, got ",
                t.scalar_type());
    TORCH_CHECK(t.is_contiguous(), fn, ": ", name, " must be contiguous");
    TORCH_CHECK(t.sizes().equals(shape), fn, ": ", name, " has shape ", t.sizes(),
                "; the kernel was generated for ", shape);
}

// An input only the anchor's at:: call reads: on the right device (at:: checks the rest).
static void stark_check_device(const char* fn, const char* name, const at::Tensor& t,
                               const at::Tensor& like) {
    TORCH_CHECK(t.is_cuda(), fn, ": ", name, " must be a CUDA tensor, got one on ", t.device());
    TORCH_CHECK(t.device() == like.device(), fn, ": ", name, " is on ", t.device(),
                ", the other inputs on ", like.device());
}
#endif  // STARK_GPU_HOST_HELPERS_
"""

ANCHOR_HEADERS = {
    kind: f"#include <ATen/ops/{kind}.h>\n"
    for kind in ["linear", "matmul", "mm", "bmm", "addmm"]
    + [f"conv{t}{d}d" for t in ("", "_transpose") for d in (1, 2, 3)]
}


@dataclass(frozen=True, slots=True)
class Buffers:
    """The kernel's pointer parameters: `in_` read, `out_` written, `io_` both (in place,
    so not __restrict__)."""

    names: dict[str, str]  # buffer -> pointer variable
    decls: dict[str, str]  # buffer -> its declaration in the kernel's parameter list

    def __getitem__(self, buffer: str) -> str:
        return self.names[buffer]

    def declarations(self) -> list[str]:
        return list(self.decls.values())


def buffer_params(plan: PointwisePlan | RowPlan) -> Buffers:
    read = {ld.tensor for ld in plan.loads}
    written = {s.target for s in plan.stores}
    names: dict[str, str] = {}
    decls: dict[str, str] = {}
    for buffer in plan.buffers:
        if buffer in read and buffer in written:
            names[buffer] = f"io_{buffer}"
            decls[buffer] = f"float* io_{buffer}"
        elif buffer in read:
            names[buffer] = f"in_{buffer}"
            decls[buffer] = f"const float* __restrict__ in_{buffer}"
        else:
            names[buffer] = f"out_{buffer}"
            decls[buffer] = f"float* __restrict__ out_{buffer}"
    return Buffers(names, decls)


def check_lines(plan: PointwisePlan | RowPlan) -> list[str]:
    """TORCH_CHECKs of every input: device, dtype, contiguity and shape of those read."""
    tensors = [p for p in plan.params if p.meta is not None and not p.module]
    like = tensors[0].name if tensors else plan.params[0].name
    read = set(plan.buffers)
    lines = []
    for param in plan.params:
        if param.name in read and param.meta is not None:
            shape = ", ".join(str(d) for d in param.meta.shape)
            lines.append(
                f'    stark_check("{plan.title}", "{param.name}", {param.name}, {{{shape}}}, {like});'
            )
        else:
            lines.append(
                f'    stark_check_device("{plan.title}", "{param.name}", {param.name}, {like});'
            )
    return lines


def launch_check(indent: str) -> list[str]:
    return [f"{indent}C10_CUDA_KERNEL_LAUNCH_CHECK();"]


def _ints(value: object, dims: int) -> str:
    values = list(value) if isinstance(value, list | tuple) else [value] * dims
    return "{" + ", ".join(str(int(v)) for v in values) + "}"


def anchor_expr(anchor: AnchorCall) -> str:
    """The anchor as an at:: call (C++)."""
    args = [name if name else "{}" for name in anchor.operands]
    p = anchor.params
    if anchor.kind.startswith("conv"):
        dims = int(anchor.kind[-2])
        stride, padding = _ints(p["stride"], dims), _ints(p["padding"], dims)
        dilation, groups = _ints(p["dilation"], dims), int(p["groups"])
        bias = args[2] if len(args) > 2 else "{}"
        if "transpose" in anchor.kind:
            out_pad = _ints(p.get("output_padding", 0), dims)
            rest = f"{stride}, {padding}, {out_pad}, {groups}, {dilation}"
        else:
            rest = f"{stride}, {padding}, {dilation}, {groups}"
        return f"at::{anchor.kind}({args[0]}, {args[1]}, {bias}, {rest})"
    if anchor.kind == "linear":
        return f"at::linear({', '.join(args[:3])})"
    if anchor.kind == "addmm":
        scalars = [repr(float(p.get("beta", 1.0))), repr(float(p.get("alpha", 1.0)))]
        return f"at::addmm({', '.join(args[:3] + scalars)})"
    return f"at::{anchor.kind}({', '.join(args[:2])})"
