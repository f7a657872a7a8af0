"""Wrong: one NaN where the reference is finite."""

import torch
from torch import nn


class ModelNew(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))
        self.b = nn.Parameter(torch.randn(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(x * self.w + self.b)
        out[0, 0] = float("nan")
        return out
