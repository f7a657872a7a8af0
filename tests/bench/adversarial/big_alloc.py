"""Fault: asks for 6 GiB (more than a 2 GiB memory limit allows)."""

import torch
from torch import nn


class ModelNew(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))
        self.b = nn.Parameter(torch.randn(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.ones(3 << 29, dtype=torch.float32)
        return torch.relu(x * self.w + self.b)
