"""Tiny reference: y = relu(x * w + b) with learned weights (identical init on both sides)."""

import torch
from torch import nn

N, D = 64, 128


class Model(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))
        self.b = nn.Parameter(torch.randn(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x * self.w + self.b)


def get_inputs() -> list[torch.Tensor]:
    return [torch.randn(N, D)]


def get_init_inputs() -> list[int]:
    return [D]
