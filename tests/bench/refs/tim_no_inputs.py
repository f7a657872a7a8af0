"""Tiny reference with no inputs at all: its output depends on its weights only."""

import torch
from torch import nn


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(32, 32))

    def forward(self) -> torch.Tensor:
        return self.w @ self.w


def get_inputs() -> list:
    return []


def get_init_inputs() -> list:
    return []
