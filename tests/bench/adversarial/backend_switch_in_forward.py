"""Cheat: lowers float32 matmul precision (TF32 / bf16 passes on a GPU) from inside its
forward, after the checked first calls, so the reference's matmuls change under it."""

import torch
from torch import nn


class ModelNew(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))
        self.b = nn.Parameter(torch.randn(d))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > 3:
            torch.set_float32_matmul_precision("medium")
        return torch.relu(x * self.w + self.b)
