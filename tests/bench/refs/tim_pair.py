"""Tiny reference returning a tuple of two tensors (one integer, one float)."""

import torch
from torch import nn

N, D = 64, 32


class Model(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.argmax(x, dim=1), x.sum(dim=1)


def get_inputs() -> list[torch.Tensor]:
    return [torch.randn(N, D)]


def get_init_inputs() -> list:
    return []
