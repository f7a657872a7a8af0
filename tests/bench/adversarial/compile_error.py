"""Fault: a C++ syntax error (no torch headers, so the compiler fails within a second)."""

import torch
from torch import nn
from torch.utils.cpp_extension import load_inline

SOURCE = """
int ok_function(int a) { return a + 1; }
int broken_function(int a) { return a + undeclared_name_xyz; }
"""

ext = load_inline(
    name="stark_broken", cpp_sources=SOURCE, no_implicit_headers=True, is_python_module=False
)


class ModelNew(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x
