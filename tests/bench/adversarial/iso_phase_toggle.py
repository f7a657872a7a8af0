"""Loops forever while a thread keeps rewriting the sandbox's phase file, to reset the deadline.

It forges unsigned phase words ("warmup x", "run x"), and it also replays every genuine signed
line it has seen the worker write, so a parent that accepted any signed change (or the same
phase twice) would keep restarting the clock and never kill it."""

import os
import threading
import time

import torch
from torch import nn

PHASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "phase")


def _toggle() -> None:
    seen: list[str] = []
    for round_ in range(100_000):
        try:
            with open(PHASE) as fh:
                line = fh.read()
            if line not in seen and len(line.split()) == 2:
                seen.append(line)
        except OSError:
            pass
        choices = ["warmup x", "run x", "compile", *seen]
        with open(PHASE, "w") as fh:
            fh.write(choices[round_ % len(choices)])
        time.sleep(0.02)


threading.Thread(target=_toggle, daemon=True).start()


class ModelNew(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        while self.calls > 1:  # the unchecked first call returns, then every call hangs
            time.sleep(0.05)
        return x
