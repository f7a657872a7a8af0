"""Fault (GPU): a CUDA kernel writes far out of bounds (an illegal memory access)."""

import torch
from torch import nn
from torch.utils.cpp_extension import load_inline

CUDA_SOURCE = r"""
__global__ void poke(float* p) { p[(size_t)1 << 40] = 1.0f; }

torch::Tensor crash(torch::Tensor x) {
    poke<<<1, 1>>>(x.data_ptr<float>());
    return x.clone();
}
"""

ext = load_inline(
    name="stark_illegal_access",
    cpp_sources="torch::Tensor crash(torch::Tensor x);",
    cuda_sources=CUDA_SOURCE,
    functions=["crash"],
)


class ModelNew(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ext.crash(x)
