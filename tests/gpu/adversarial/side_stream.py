# stark: reference=../../../examples/elementwise_chain.py
"""Adversarial: does the real work on a side stream and never synchronises.

CUDA events recorded on the default stream then see almost nothing, so an
event-only timer reports a huge speedup. Host time around a device-wide
synchronize still sees the work: the benchmarker must flag
side_stream_suspected (or reject the result if it reads it too early).
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
        self.side = torch.cuda.Stream()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.cuda.stream(self.side):
            y = F.gelu(x * self.scale + self.shift) * torch.sigmoid(x)
            out = torch.clamp(y, self.clamp_min, self.clamp_max)
        return out
