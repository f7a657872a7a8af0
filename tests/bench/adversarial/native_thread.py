"""Suspicious: every forward starts an OS-level thread (C++ std::thread, detached) that is
still running when forward returns. Correct output, so only a flag is expected."""

import ctypes

import torch
from torch import nn
from torch.utils.cpp_extension import load_inline

SOURCE = """
#include <chrono>
#include <thread>
extern "C" void start_sleeper() {
    std::thread([] { std::this_thread::sleep_for(std::chrono::milliseconds(300)); }).detach();
}
"""

LIBRARY = load_inline(
    name="stark_native_thread",
    cpp_sources=SOURCE,
    no_implicit_headers=True,
    is_python_module=False,
    extra_ldflags=["-lpthread"],
)
START = ctypes.CDLL(LIBRARY).start_sleeper


class ModelNew(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))
        self.b = nn.Parameter(torch.randn(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        START()
        return torch.relu(x * self.w + self.b)
