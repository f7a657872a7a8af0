"""Row-wise L2 norm: the square root of the sum of squares along the last dimension.

A pure reduction, so the output is tiny and the kernel is bound by reading the
input once. KernelBench format.
"""

import torch
import torch.nn as nn

BATCH = 4096
DIM = 4096


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(torch.sum(x * x, dim=-1))


def get_inputs() -> list[torch.Tensor]:
    return [torch.randn(BATCH, DIM)]


def get_init_inputs() -> list:
    return []
