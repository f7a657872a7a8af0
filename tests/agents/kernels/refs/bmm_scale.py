"""Batched matmul, then a scale."""

import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.bmm(a, b) * self.scale


def get_inputs():
    return [torch.randn(4, 32, 64), torch.randn(4, 64, 48)]


def get_init_inputs():
    return [0.5]
