"""Pointwise ops on both sides of a permute and a view: three separate pointwise runs."""

import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(x) * 2.0
        y = y.permute(0, 2, 1)
        y = y + 1.0
        y = y.reshape(y.shape[0], -1)
        return torch.tanh(y)


def get_inputs():
    return [torch.randn(8, 16, 32)]


def get_init_inputs():
    return []
