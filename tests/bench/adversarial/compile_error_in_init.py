"""Fault: the extension is built lazily, in ModelNew.__init__ (as many hand-written CUDA
candidates do), and its C++ does not compile. That is a compile verdict with the
compiler's text in `log`, not an import error."""

import torch
from torch import nn
from torch.utils.cpp_extension import load_inline

SOURCE = """
int ok_function(int a) { return a + 1; }
int broken_function(int a) { return a + undeclared_in_init_xyz; }
"""


class ModelNew(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.ext = load_inline(
            name="stark_broken_in_init",
            cpp_sources=SOURCE,
            no_implicit_headers=True,
            is_python_module=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x
