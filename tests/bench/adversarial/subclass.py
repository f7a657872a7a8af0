"""Cheat: returns a torch.Tensor subclass with the right values."""

import torch
from torch import nn


class Sneaky(torch.Tensor):
    pass


class ModelNew(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))
        self.b = nn.Parameter(torch.randn(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x * self.w + self.b).as_subclass(Sneaky)
