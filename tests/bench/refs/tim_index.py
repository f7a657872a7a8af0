"""Tiny reference whose only input is an integer index tensor (rescaling can't change it)."""

import torch
from torch import nn

V, D, N, K = 500, 16, 64, 8


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(V, D))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.table[idx].sum(1))


def get_inputs() -> list[torch.Tensor]:
    return [torch.randint(0, V, (N, K))]


def get_init_inputs() -> list[int]:
    return []
