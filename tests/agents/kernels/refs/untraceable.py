"""Data-dependent control flow: torch.fx cannot trace it."""

import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2.0
        return x - 1.0


def get_inputs():
    return [torch.randn(64, 512)]


def get_init_inputs():
    return []
