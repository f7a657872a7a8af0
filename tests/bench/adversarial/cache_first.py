"""Cheat: computes the first call's answer and returns it for every later input."""

import torch
from torch import nn


class ModelNew(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))
        self.b = nn.Parameter(torch.randn(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "cached"):
            self.cached = torch.relu(x * self.w + self.b)
        return self.cached.clone()
