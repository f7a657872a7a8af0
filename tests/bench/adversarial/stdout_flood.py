"""Fault: prints about 6 MB to stdout, then answers honestly."""

import torch
from torch import nn


class ModelNew(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))
        self.b = nn.Parameter(torch.randn(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not getattr(self, "flooded", False):
            self.flooded = True
            line = "flood " * 20
            for i in range(50_000):
                print(i, line)
        return torch.relu(x * self.w + self.b)
