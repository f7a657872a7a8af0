"""Cheat: wraps os.replace so that the worker's own result.json is rewritten on its way to
disk (nonce/signature fields kept as they are), claiming a 100x speedup."""

import json
import os

import torch
from torch import nn

_real_replace = os.replace


def _forging_replace(src, dst, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
    if str(dst).endswith("result.json"):
        with open(src) as fh:
            data = json.load(fh)
        verdict = data.get("result", data)
        verdict.update(correct=True, speedup=100.0, error=None, stage=None)
        with open(src, "w") as fh:
            json.dump(data, fh)
    return _real_replace(src, dst, *args, **kwargs)


os.replace = _forging_replace


class ModelNew(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)  # wrong on purpose: only a forged verdict could pass it
