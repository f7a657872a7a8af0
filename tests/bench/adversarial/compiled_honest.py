"""Honest candidate that uses torch.compile: torch's own patching (dynamo wraps
torch.manual_seed and nn.Module.__init__) must not be mistaken for tampering."""

import torch
from torch import nn


def _scale_add_relu(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.relu(x * w + b)


fused = torch.compile(_scale_add_relu, backend="eager")


class ModelNew(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))
        self.b = nn.Parameter(torch.randn(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused(x, self.w, self.b)
