"""Honest C++ kernel (no torch headers, called through ctypes so it builds in about a second).
cpp_ctypes_a.py and cpp_ctypes_b.py use the same extension name= with different sources and
function names: if their builds collided, one of them would not find its symbol."""

import ctypes

import torch
from torch import nn
from torch.utils.cpp_extension import load_inline

SOURCE = """
#include <algorithm>
#include <cmath>
#include <cstdint>
extern "C" void scale_add_relu_v2(const float* x, const float* w, const float* b, float* out,
                    int64_t rows, int64_t cols) {
    for (int64_t i = 0; i < rows; ++i)
        for (int64_t c = 0; c < cols; ++c) { const float v = std::fma(x[i * cols + c], w[c], b[c]); out[i * cols + c] = std::max(v, 0.0f); }
}
"""

LIBRARY = load_inline(
    name="stark_shared_name",
    cpp_sources=SOURCE,
    no_implicit_headers=True,
    is_python_module=False,
    extra_cflags=["-O2"],
)
KERNEL = ctypes.CDLL(LIBRARY).scale_add_relu_v2
KERNEL.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 2


class ModelNew(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))
        self.b = nn.Parameter(torch.randn(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        out = torch.empty_like(x)
        KERNEL(x.data_ptr(), self.w.data_ptr(), self.b.data_ptr(), out.data_ptr(), *x.shape)
        return out
