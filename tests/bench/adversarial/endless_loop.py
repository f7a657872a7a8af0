"""Fault: starts a helper process (same process group) at import, then never returns from
forward. MARKER is replaced per test run so the test can check both are gone afterwards."""

import subprocess

import torch
from torch import nn

HELPER = subprocess.Popen(["sh", "-c", "sleep 600 # MARKER"])


class ModelNew(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        while True:
            pass
