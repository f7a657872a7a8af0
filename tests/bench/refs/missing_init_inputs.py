"""A broken reference task: it has no get_init_inputs (a reference error, not a candidate's)."""

import torch
from torch import nn


class Model(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def get_inputs() -> list[torch.Tensor]:
    return [torch.randn(4, 4)]
