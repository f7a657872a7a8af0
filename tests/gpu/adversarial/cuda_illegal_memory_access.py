# stark: reference=../../../examples/elementwise_chain.py
"""Adversarial fault: a CUDA kernel that writes 1 TiB past the end of its output.

The write raises cudaErrorIllegalAddress, which poisons the whole CUDA context
of the process. The benchmarker must turn it into a verdict, and the next
evaluation (a fresh worker, a fresh context) must still run.
"""

import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

CUDA_SRC = r"""
__global__ void write_far_out_of_bounds(float* out, long long n) {
    long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) {
        out[i + (1LL << 38)] = 1.0f;  // 2^38 floats = 1 TiB beyond the allocation
    }
}

torch::Tensor broken_forward(torch::Tensor x) {
    torch::Tensor out = torch::empty_like(x);
    const long long n = x.numel();
    write_far_out_of_bounds<<<(n + 255) / 256, 256>>>(out.data_ptr<float>(), n);
    return out;
}
"""

ext = load_inline(
    name="stark_adversarial_illegal_access",
    cpp_sources="torch::Tensor broken_forward(torch::Tensor x);",
    cuda_sources=CUDA_SRC,
    functions=["broken_forward"],
    verbose=False,
)


class ModelNew(nn.Module):
    def __init__(self, scale: float, shift: float, clamp_min: float, clamp_max: float) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ext.broken_forward(x)
