"""Fault: honest on its first call (the harness's warm-up), then never returns from forward,
so the hang happens under the run deadline rather than the warm-up (compile) deadline."""

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
        while self.calls > 1:
            pass
        return torch.relu(x * self.w + self.b)
