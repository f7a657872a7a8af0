"""Schedules: the tunable parameters of one group's kernel, per backend.

A schedule is a plain dict (it travels in plan JSON and node headers). Code generators read
only the keys of their backend, falling back to `DEFAULTS`; unknown keys are an error, so a
typo in a plan is caught rather than ignored. `neighbours` lists the one-parameter changes
the plan step can propose, which is what the tree search explores: two schedules of the
same code are two different nodes.

cpp (ATen's OpenMP thread pool via at::parallel_for, `#pragma omp simd` inner loops):
    vector      how the inner loops vectorise: "aten" (at::vec::Vectorized, with SLEEF's
                vector exp/tanh/erf), "simd" (scalar code under `#pragma omp simd`) or
                "scalar" (neither): the debug step's "smaller vector width" steps down this list
    grain       at::parallel_for grain size: elements (pointwise/epilogue) or rows (reduction)
    unroll      vectors (or, for "simd"/"scalar", elements) per inner-loop iteration
    accumulate  reductions: "float", "double" or "kahan" (compensated) accumulation
    loop_order  reductions over a non-innermost dim: "inner" (vectorise across the kept
                inner elements) or "reduced" (one output element at a time)
triton:
    block       BLOCK_SIZE (elements per program, or the row tile of a reduction)
    num_warps   warps per program
    rows        rows per program (reductions)
cuda:
    threads     threads per block
    vector      elements per thread per load (1, 2 or 4: float4 loads when 4)
    rows        rows per block (reductions)
"""

from __future__ import annotations

from typing import Any

DEFAULTS: dict[str, dict[str, Any]] = {
    "cpp": {
        "vector": "aten",
        "grain": 32768,
        "unroll": 1,
        "accumulate": "float",
        "loop_order": "inner",
    },
    "triton": {"block": 1024, "num_warps": 4, "rows": 1},
    "cuda": {"threads": 256, "vector": 1, "rows": 1},
}

CHOICES: dict[str, dict[str, tuple[Any, ...]]] = {
    "cpp": {
        "vector": ("aten", "simd", "scalar"),
        "grain": (2048, 8192, 32768, 131072, 524288),
        "unroll": (1, 2, 4),
        "accumulate": ("float", "double", "kahan"),
        "loop_order": ("inner", "reduced"),
    },
    "triton": {
        "block": (256, 512, 1024, 2048, 4096),
        "num_warps": (1, 2, 4, 8),
        "rows": (1, 2, 4),
    },
    "cuda": {"threads": (128, 256, 512, 1024), "vector": (1, 2, 4), "rows": (1, 2, 4)},
}

# Reduction grains count rows, not elements: their default is smaller.
REDUCTION_GRAIN = 16


class ScheduleError(ValueError):
    """A schedule with an unknown key or a value outside its choices."""


def default_schedule(backend: str, group_kind: str) -> dict[str, Any]:
    schedule = dict(DEFAULTS[backend])
    if backend == "cpp" and group_kind == "reduction":
        schedule["grain"] = REDUCTION_GRAIN
    return schedule


def resolve(backend: str, group_kind: str, schedule: dict[str, Any] | None) -> dict[str, Any]:
    """`schedule` completed with defaults and checked against the backend's choices."""
    if backend not in DEFAULTS:
        raise ScheduleError(f"unknown backend {backend!r}: expected one of {sorted(DEFAULTS)}")
    merged = default_schedule(backend, group_kind)
    for key, value in (schedule or {}).items():
        if key not in merged:
            raise ScheduleError(
                f"unknown {backend} schedule key {key!r}: expected one of {sorted(merged)}"
            )
        allowed = CHOICES[backend][key]
        grain_rows = key == "grain" and group_kind == "reduction"
        if not grain_rows and value not in allowed:
            raise ScheduleError(f"{backend} {key}={value!r} is not one of {list(allowed)}")
        if grain_rows and not (isinstance(value, int) and value >= 1):
            raise ScheduleError(f"{backend} grain={value!r}: a row count >= 1 is needed")
        merged[key] = value
    return merged


def neighbours(backend: str, group_kind: str, schedule: dict[str, Any]) -> list[tuple[str, Any]]:
    """Every one-parameter change of `schedule`: (key, new value), nearest choices first."""
    current = resolve(backend, group_kind, schedule)
    moves: list[tuple[str, Any]] = []
    for key, allowed in CHOICES[backend].items():
        if group_kind != "reduction" and key in ("accumulate", "loop_order", "rows"):
            continue
        if backend == "cuda" and group_kind == "reduction" and key == "vector":
            continue  # CUDA row reductions load one float at a time: the key changes nothing
        values = list(allowed)
        if backend == "cpp" and key == "grain" and group_kind == "reduction":
            values = [1, 4, 16, 64, 256]
        if current[key] not in values:
            moves += [(key, v) for v in values]
            continue
        at = values.index(current[key])
        order = sorted(range(len(values)), key=lambda i: (abs(i - at), i))
        moves += [(key, values[i]) for i in order if i != at]
    return moves
