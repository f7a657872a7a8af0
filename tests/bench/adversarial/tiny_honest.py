"""Honest candidate for refs/tiny_values.py (must pass the tight near-zero check)."""

import torch
from torch import nn


class ModelNew(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1e-6 / (1.0 + torch.exp(-x))
