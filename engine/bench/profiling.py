"""A short torch.profiler run of the candidate, ranked by self time.

The plan agent reads this to decide what to optimise next, so entries are per
forward call: `self_ms` is the operator's self time divided by the number of
profiled calls, and `calls` is how often it ran per forward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from engine.bench.result import ProfileEntry

PROFILED_CALLS = 3


def profile_candidate(
    model: Callable[..., Any], inputs: list[Any], device: torch.device, top_k: int
) -> list[ProfileEntry]:
    on_cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    with torch.no_grad():
        model(*inputs)  # one untraced call, so lazy initialisation is not in the profile
        if on_cuda:
            torch.cuda.synchronize()
        with profile(activities=activities) as prof:
            for _ in range(PROFILED_CALLS):
                model(*inputs)
            if on_cuda:
                torch.cuda.synchronize()
    return top_entries(prof.key_averages(), on_cuda, top_k)


def top_entries(averages: Any, on_cuda: bool, top_k: int) -> list[ProfileEntry]:
    """Rank by device self time on CUDA (the kernels), by CPU self time otherwise."""

    def self_us(event: Any) -> float:
        if on_cuda:
            return float(getattr(event, "self_device_time_total", 0.0) or 0.0)
        return float(event.self_cpu_time_total)

    ranked = sorted((e for e in averages if self_us(e) > 0), key=self_us, reverse=True)
    total = sum(self_us(e) for e in ranked) or 1.0
    return [
        ProfileEntry(
            name=e.key,
            self_ms=self_us(e) / 1000.0 / PROFILED_CALLS,
            calls=max(1, round(e.count / PROFILED_CALLS)),
            percent=100.0 * self_us(e) / total,
        )
        for e in ranked[:top_k]
    ]
