"""Cheat: computes in place in its input buffer."""

import torch
from torch import nn


class ModelNew(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))
        self.b = nn.Parameter(torch.randn(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.mul_(self.w).add_(self.b).relu_()
        return x.clone()
