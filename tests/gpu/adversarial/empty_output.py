# stark: reference=../../../examples/elementwise_chain.py
"""Adversarial: returns uninitialised memory of the right shape.

If the harness ran the reference first and freed its output, the CUDA caching
allocator would hand that very block back here and this would "pass" while
doing no work (the Sakana failure). The benchmarker must reject it.
"""

import torch
import torch.nn as nn


class ModelNew(nn.Module):
    def __init__(self, scale: float, shift: float, clamp_min: float, clamp_max: float) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(x)
