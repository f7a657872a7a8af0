"""Cheat: turns oneDNN off for the whole process while being built, so the reference (which
runs after it, in the same process) may get slower kernels; its own answer is honest."""

import torch
from torch import nn

torch.backends.mkldnn.enabled = True  # harmless at import: the same as before


class ModelNew(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))
        self.b = nn.Parameter(torch.randn(d))
        torch.backends.mkldnn.enabled = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x * self.w + self.b)
