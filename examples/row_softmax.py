"""Softmax over the last dimension of a wide activation matrix.

A memory-bound row reduction followed by a normalisation: the classic target
for a one-pass (online) softmax kernel. KernelBench format.
"""

import torch
import torch.nn as nn

BATCH = 8192
DIM = 2048


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=-1)


def get_inputs() -> list[torch.Tensor]:
    return [torch.randn(BATCH, DIM) * 4.0]


def get_init_inputs() -> list:
    return []
