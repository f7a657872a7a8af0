"""Fault: forward raises (a plain bug); the verdict must point at this line."""

import torch
from torch import nn


class ModelNew(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ torch.ones(3, 3)  # wrong inner dimension
