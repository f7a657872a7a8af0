"""Cheat: changes torch's thread count (the harness times both sides with the same)."""

import torch
from torch import nn


class ModelNew(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))
        self.b = nn.Parameter(torch.randn(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.set_num_threads(1)
        return torch.relu(x * self.w + self.b)
