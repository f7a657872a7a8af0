"""Cheat: returns at once and finishes the output in a background thread."""

import threading
import time

import torch
from torch import nn


class ModelNew(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))
        self.b = nn.Parameter(torch.randn(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)

        def finish() -> None:
            time.sleep(0.05)
            out.copy_(torch.relu(x * self.w + self.b))

        threading.Thread(target=finish, name="finisher").start()
        return out
