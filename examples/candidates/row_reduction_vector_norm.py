# stark: reference=../row_reduction.py
"""Row L2 norm through torch.linalg.vector_norm: one fused pass over the input
instead of materialising x * x before the sum."""

import torch
import torch.nn as nn


class ModelNew(nn.Module):
    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(x, ord=2, dim=-1)
