"""The worker process's own settings, fixed before either side's code runs: which device,
an allocator that keeps freed memory, and resource limits."""

from __future__ import annotations

import ctypes
import os
import resource

import torch

from engine.bench.config import EvalConfig
from engine.bench.memory_guard import address_space_cap, memory_limit_bytes
from engine.bench.process_tree import read_proc_file

FILE_SIZE_LIMIT = 1 << 30


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA was requested but no CUDA device is available to the worker")
    return torch.device(requested)


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc mallopt parameters


def steady_allocator() -> bool:
    """Keep freed memory in the process (glibc: no mmap for big blocks, never trim), so that
    neither side pays page faults to get back memory it just freed. Otherwise an eager chain
    of large temporaries times bimodally (e.g. 8.5 ms or 17 ms for the same code) depending on
    glibc's adaptive mmap threshold. Applied before either side runs: both are timed alike."""
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(2**31 - 1))
        )
    except (OSError, AttributeError):
        return False  # not glibc: the platform allocator as it is


def apply_limits(device: torch.device, config: EvalConfig) -> None:
    """File size always. Memory is limited on what is resident, by the sandbox's watchdog
    (memory_guard.py); here only a generous address-space cap on CPU, so one allocation that
    could never fit fails at once inside the worker instead of being killed."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))
    if device.type != "cpu":
        return  # CUDA reserves huge virtual ranges; RLIMIT_AS would break it
    fields = read_proc_file("/proc/self/statm").split()
    mapped = int(fields[0]) * os.sysconf("SC_PAGE_SIZE") if fields else 0
    cap = address_space_cap(memory_limit_bytes(config), mapped)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
