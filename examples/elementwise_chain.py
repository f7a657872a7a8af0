"""An elementwise chain: scale and shift, GELU, a sigmoid gate, then a clamp.

Eager PyTorch runs each op as its own pass over memory (six round trips), so a
single fused loop, whether from torch.compile or a hand-written kernel, is
several times faster. KernelBench format: Model, get_inputs, get_init_inputs.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

BATCH = 1536
DIM = 4096
SCALE = 1.5
SHIFT = 0.25
CLAMP_MIN = -0.5
CLAMP_MAX = 2.0


class Model(nn.Module):
    def __init__(self, scale: float, shift: float, clamp_min: float, clamp_max: float) -> None:
        super().__init__()
        self.scale = scale
        self.shift = shift
        self.clamp_min = clamp_min
        self.clamp_max = clamp_max

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * self.scale + self.shift
        y = F.gelu(y)
        y = y * torch.sigmoid(x)
        return torch.clamp(y, self.clamp_min, self.clamp_max)


def get_inputs() -> list[torch.Tensor]:
    return [torch.randn(BATCH, DIM)]


def get_init_inputs() -> list[float]:
    return [SCALE, SHIFT, CLAMP_MIN, CLAMP_MAX]
