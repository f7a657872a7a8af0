# stark: reference=../../../examples/elementwise_chain.py
"""Adversarial: computes the right answer, then zeroes its input in place.

A harness that shares inputs between the two sides, or checks the candidate
against a reference run afterwards on the same tensors, can be fooled this way.
Inputs must be unchanged after the candidate runs: the benchmarker must reject it.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class ModelNew(nn.Module):
    def __init__(self, scale: float, shift: float, clamp_min: float, clamp_max: float) -> None:
        super().__init__()
        self.scale = scale
        self.shift = shift
        self.clamp_min = clamp_min
        self.clamp_max = clamp_max

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(x * self.scale + self.shift) * torch.sigmoid(x)
        out = torch.clamp(y, self.clamp_min, self.clamp_max)
        x.zero_()
        return out
