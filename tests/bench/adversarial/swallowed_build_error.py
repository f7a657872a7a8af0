"""Its C++ build fails and it quietly falls back to PyTorch: correct, but flagged, so a
search never mistakes it for a working kernel. The source goes through `load` (files), not
`load_inline`."""

from pathlib import Path

import torch
from torch import nn
from torch.utils.cpp_extension import load

SOURCE = Path(__file__).with_name("kernel.cpp")
SOURCE.write_text("int kernel(int a) { return a + not_declared_anywhere; }\n")

try:
    load(name="stark_fallback", sources=[str(SOURCE)], is_python_module=False)
    HAVE_KERNEL = True
except RuntimeError:
    HAVE_KERNEL = False


class ModelNew(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))
        self.b = nn.Parameter(torch.randn(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x * self.w + self.b)
