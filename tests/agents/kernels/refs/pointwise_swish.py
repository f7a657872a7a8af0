"""Pointwise chain: x * sigmoid(x) * scale + bias (a Swish with a scale and a bias)."""

import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale
        self.bias = nn.Parameter(torch.randn(512))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * torch.sigmoid(x)
        y = y * self.scale
        return y + self.bias


def get_inputs():
    return [torch.randn(64, 512)]


def get_init_inputs():
    return [2.0]
