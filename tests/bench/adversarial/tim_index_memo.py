"""Cheat: memoises on the input's address and first values. Correctness trials always bring
new inputs; timing used to reuse one integer tensor, so every timed call was a cache hit.
Each hit is logged so the test can see whether timing ever served one."""

import os

import torch
from torch import nn


class ModelNew(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(500, 16))
        self._memo: dict[tuple, torch.Tensor] = {}
        self._calls = 0

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        self._calls += 1
        key = (idx.data_ptr(), tuple(idx.reshape(-1)[:16].tolist()))
        hit = self._memo.get(key)
        # Calls 1-6: the unchecked first call and 5 trials; 7-9: timing warm-up (warmup_s=0).
        if hit is not None and self._calls > 9:  # inside the timed rounds
            os.write(2, b"tim-memo-hit\n")
            return hit.clone()
        out = torch.tanh(self.table[idx].sum(1))
        self._memo[key] = out.clone()
        return out
