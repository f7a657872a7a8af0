# stark: reference=../../../examples/elementwise_chain.py
"""Adversarial fault: CUDA source that does not compile.

`undeclared_scale` is never declared, so nvcc stops with
`cuda.cu(LINE): error: identifier "undeclared_scale" is undefined`. The
benchmarker must report compiled=False with that file-and-line text in `log`.
"""

import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

CUDA_SRC = r"""
__global__ void scale_kernel(const float* in, float* out, long long n) {
    long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) {
        out[i] = in[i] * undeclared_scale;
    }
}

torch::Tensor scale_forward(torch::Tensor x) {
    torch::Tensor out = torch::empty_like(x);
    const long long n = x.numel();
    scale_kernel<<<(n + 255) / 256, 256>>>(x.data_ptr<float>(), out.data_ptr<float>(), n);
    return out;
}
"""

ext = load_inline(
    name="stark_adversarial_compile_error",
    cpp_sources="torch::Tensor scale_forward(torch::Tensor x);",
    cuda_sources=CUDA_SRC,
    functions=["scale_forward"],
    verbose=False,
)


class ModelNew(nn.Module):
    def __init__(self, scale: float, shift: float, clamp_min: float, clamp_max: float) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ext.scale_forward(x)
