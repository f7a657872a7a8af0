"""torch's process-wide backend switches, read through getters bound before user code runs.

A candidate that turns off flash attention, forces deterministic algorithms, disables
cuDNN or oneDNN, or lowers matmul precision changes which kernels the *reference* runs:
it can slow the reference down (or speed itself up) while its own numbers still match.
Both sides must run under the settings the evaluation started with, so the worker takes a
snapshot after the reference's first call and rejects a candidate that changed any of them.
The getters come straight from `torch._C`, bound at import, so replacing
`torch.backends.*` in Python cannot hide a change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

_GETTER_NAMES = (
    "_get_cudnn_enabled",
    "_get_cudnn_benchmark",
    "_get_cudnn_deterministic",
    "_get_cudnn_allow_tf32",
    "_get_cublas_allow_tf32",
    "_get_cublas_allow_fp16_reduced_precision_reduction",
    "_get_cublas_allow_bf16_reduced_precision_reduction",
    "_get_cpu_allow_fp16_reduced_precision_reduction",
    "_get_float32_matmul_precision",
    "_get_deterministic_algorithms",
    "_get_deterministic_algorithms_warn_only",
    "_get_mkldnn_enabled",
    "_get_mkldnn_deterministic",
    "_get_onednn_allow_tf32",
    "_get_flash_sdp_enabled",
    "_get_mem_efficient_sdp_enabled",
    "_get_math_sdp_enabled",
    "_get_cudnn_sdp_enabled",
    "_get_fa3_sdp_enabled",
    "_get_math_sdp_allow_fp16_bf16_reduction",
)

# Bound when the harness is imported (in the fork server), long before any candidate.
_GETTERS: tuple[tuple[str, Callable[[], Any]], ...] = tuple(
    (name.removeprefix("_get_"), getter)
    for name in _GETTER_NAMES
    if callable(getter := getattr(torch._C, name, None))
)

# (name, value as text) pairs: immutable, so a candidate cannot edit the harness's copy.
BackendSettings = tuple[tuple[str, str], ...]


def current(getters: tuple[tuple[str, Callable[[], Any]], ...] = _GETTERS) -> BackendSettings:
    """Every switch this torch build has, as text (a getter that fails reads as its error)."""
    settings: list[tuple[str, str]] = []
    for name, getter in getters:
        try:
            settings.append((name, repr(getter())))
        except Exception as exc:  # noqa: BLE001 - a build may list a getter it cannot answer
            settings.append((name, f"<{type(exc).__name__}>"))
    return tuple(settings)


def changes(before: BackendSettings, after: BackendSettings) -> list[str]:
    """'name: old -> new' for each switch that differs."""
    old, new = dict(before), dict(after)
    return [
        f"{name}: {old.get(name)} -> {new.get(name)}"
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    ]
