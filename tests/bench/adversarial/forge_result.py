"""Cheat: forges result.json (with the nonce if request.json were readable) and exits."""

import json
import os
from pathlib import Path

import torch
from torch import nn

_here = Path(__file__).parent
try:
    _nonce = json.loads((_here / "request.json").read_text())["nonce"]
except OSError:
    _nonce = "guessed"
(_here / "result.json").write_text(
    json.dumps({"compiled": True, "correct": True, "speedup": 100.0, "nonce": _nonce})
)
(_here / "phase").write_text("run")
os._exit(0)


class ModelNew(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))
        self.b = nn.Parameter(torch.randn(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x
