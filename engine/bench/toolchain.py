"""What an extension build depends on besides its sources (the C++ compiler, nvcc, the
device's architecture), so an upgrade invalidates the compile cache; and a plain reason
when a CUDA build cannot start at all."""

from __future__ import annotations

import functools
import os
import subprocess
from typing import Any

import torch
import torch.utils.cpp_extension as cpp_extension


def _version_line(tool: str, last: bool = False) -> str:
    """One line of `TOOL --version` (the first, or the last), or why it could not be read."""
    try:
        out = subprocess.run(
            [tool, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return f"{tool}: unavailable"
    lines = out.strip().splitlines()
    return (lines[-1] if last else lines[0]).strip() if lines else tool


@functools.cache
def compiler_id() -> str:
    """First line of `$CXX --version`: a compiler upgrade must invalidate the cache."""
    return _version_line(os.environ.get("CXX", "c++"))


@functools.cache
def nvcc_id() -> str:
    """Last line of `nvcc --version` (its build): a toolkit upgrade must invalidate CUDA builds."""
    home = cpp_extension.CUDA_HOME
    return _version_line(os.path.join(home, "bin", "nvcc") if home else "nvcc", last=True)


def cuda_arch_list(major: int, minor: int) -> str:
    """TORCH_CUDA_ARCH_LIST for this device: its own architecture only. From Hopper on, the
    arch-specific variant (9.0a = sm_90a), so candidates may use wgmma, setmaxnreg and TMA
    multicast; such code runs only on that exact architecture, which is the one measured."""
    return f"{major}.{minor}a" if major >= 9 else f"{major}.{minor}"


def device_arch(device: str) -> str:
    if device == "cuda":
        major, minor = torch.cuda.get_device_capability()
        return f"sm_{major}{minor}"
    return "cpu"


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str | bytes | os.PathLike):
        return [value]
    if isinstance(value, dict):  # functions= may be a {name: docstring} dict
        return sorted(value.items())
    return list(value)


def wants_cuda(fn_name: str, arguments: dict[str, Any]) -> bool:
    if arguments.get("with_cuda"):
        return True
    if fn_name == "load_inline":
        return any(str(src).strip() for src in as_list(arguments.get("cuda_sources")))
    return any(str(src).endswith((".cu", ".cuh")) for src in as_list(arguments.get("sources")))


def missing_cuda_toolchain(fn_name: str, arguments: dict[str, Any]) -> str | None:
    """Say plainly why a CUDA build cannot start, instead of torch's bare
    "CUDA_HOME environment variable is not set" (which on a CPU-only torch is misleading:
    setting it would not help)."""
    if not wants_cuda(fn_name, arguments):
        return None
    if cpp_extension.CUDA_HOME is not None:
        return None
    if torch.version.cuda is None:
        return (
            f"CUDA build impossible: this torch ({torch.__version__}) was built without CUDA; "
            "CUDA candidates need a CUDA build of torch, nvcc and a GPU (--device cpu runs "
            "C++ and PyTorch candidates)"
        )
    return "CUDA build impossible: no CUDA toolkit found (set CUDA_HOME to the folder of bin/nvcc)"
