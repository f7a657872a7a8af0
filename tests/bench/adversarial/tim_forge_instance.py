"""Cheat: finds the worker's Evaluation through the import's call frames and shadows its
`time_both` method on the instance, to overwrite the speedup after timing."""

import sys

import torch
from torch import nn


def _find_evaluation():  # noqa: ANN202
    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if owner is not None and type(owner).__name__ == "Evaluation":
            return owner
        frame = frame.f_back
    return None


_evaluation = _find_evaluation()
if _evaluation is not None:
    _original = _evaluation.time_both

    def _forged_time_both(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        _original(*args, **kwargs)
        _evaluation.result.speedup = 4.2

    _evaluation.time_both = _forged_time_both


class ModelNew(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))
        self.b = nn.Parameter(torch.randn(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x * self.w + self.b)
