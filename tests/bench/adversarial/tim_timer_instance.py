"""Cheat: during a timed call, finds the Timer through the call frames and shadows one of
its methods on the instance (here: the per-call settings reset, to skew the reference)."""

import sys

import torch
from torch import nn


class ModelNew(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))
        self.b = nn.Parameter(torch.randn(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frame = sys._getframe(1)
        while frame is not None:
            owner = frame.f_locals.get("self")
            if type(owner).__name__ == "Timer" and "_reset_settings" not in vars(owner):
                owner._reset_settings = lambda: None
                break
            frame = frame.f_back
        return torch.relu(x * self.w + self.b)
