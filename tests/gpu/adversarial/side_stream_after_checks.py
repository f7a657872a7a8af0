# stark: reference=../../../examples/elementwise_chain.py
"""Adversarial: honest through the checked calls, then hides its work on a side stream.

The unchecked first call and the five correctness trials join the side stream back into
the current one, so they see a correct, complete answer. From then on (the timed rounds)
the side stream is never joined: events on the current stream see almost nothing, while
the timer's device-wide synchronize waits for the side stream's ~1 ms of extra work.
Every timed round's output is still complete when the harness reads it (after that
synchronize), so only the host-vs-event comparison can catch it: the benchmarker must
flag side_stream_suspected. (side_stream.py, which never joins, is caught earlier, by a
wrong answer in the first trial.)
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

CHECKED_CALLS = 6  # the unchecked first call + 5 correctness trials


class ModelNew(nn.Module):
    def __init__(self, scale: float, shift: float, clamp_min: float, clamp_max: float) -> None:
        super().__init__()
        self.scale = scale
        self.shift = shift
        self.clamp_min = clamp_min
        self.clamp_max = clamp_max
        self.side = torch.cuda.Stream()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.side.wait_stream(torch.cuda.current_stream())  # inputs are ready on the side
        with torch.cuda.stream(self.side):
            y = F.gelu(x * self.scale + self.shift) * torch.sigmoid(x)
            out = torch.clamp(y, self.clamp_min, self.clamp_max)
            for _ in range(4):
                (x @ x.T).sum()  # busy work that only the side stream waits for
        if self.calls <= CHECKED_CALLS:
            torch.cuda.current_stream().wait_stream(self.side)
        return out
