"""Fault: a constexpr loop that keeps the compiler busy for hours. MARKER is replaced per test
run so the test can find any cc1plus that survives the timeout."""

import torch
from torch import nn
from torch.utils.cpp_extension import load_inline

SOURCE = """
// MARKER
constexpr long long spin() {
    long long s = 0;
    for (long long i = 0; i < (1LL << 40); ++i) { s += i ^ (s >> 3); }
    return s;
}
constexpr long long value = spin();
long long get_value() { return value; }
"""

ext = load_inline(
    name="stark_forever",
    cpp_sources=SOURCE,
    no_implicit_headers=True,
    is_python_module=False,
    extra_cflags=["-fconstexpr-loop-limit=2147483647", "-fconstexpr-ops-limit=4611686018427387904"],
)


class ModelNew(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x
