"""Caches the reference's constant answer: indistinguishable from computing it (flagged)."""

import torch
from torch import nn


class ModelNew(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(32, 32))
        self._answer: torch.Tensor | None = None

    def forward(self) -> torch.Tensor:
        if self._answer is None:
            self._answer = (self.w @ self.w).detach()
        return self._answer.clone()
