"""Tiny reference whose outputs are ~1e-6: far below atol, so zeros would pass a plain allclose."""

import torch
from torch import nn

N, D = 64, 128


class Model(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x) * 1e-6


def get_inputs() -> list[torch.Tensor]:
    return [torch.randn(N, D)]


def get_init_inputs() -> list[int]:
    return []
