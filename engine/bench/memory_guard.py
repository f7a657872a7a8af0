"""The memory limit is on what the worker really uses (resident memory), not on its address
space.

`RLIMIT_AS` counted virtual reservations that cost nothing: glibc reserves 64-128 MiB of
address space per thread arena, every thread a stack, OpenBLAS a buffer per core, so on a
many-core host the *reference* failed under a 2 GiB limit before any candidate ran. Now:

- the parent (`Sandbox`) polls the resident set size of the worker's process tree with
  psutil (`TreeWatch`) and kills the worker's process group once it passes the limit;
  which phase was running says whose fault it was (the reference alone runs before the
  candidate is loaded);
- the worker keeps a generous address-space cap (`address_space_cap`) so that one
  allocation far beyond the limit still fails at once, inside the worker, as a clean
  "can't allocate memory" error instead of a kill.

cgroup v2 `memory.max` would be exact, but needs a writable cgroup v2 hierarchy; the
development VM has cgroup v1 (read-only), so the watchdog is the mechanism used.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import psutil

from engine.bench.config import EvalConfig

DEFAULT_MEMORY_FRACTION = 0.75
GIB = 1 << 30
# Address space the fast-fail cap leaves above (current size + limit): reservations that are
# never touched, per CPU (a malloc arena of up to 128 MiB, a thread stack, a BLAS buffer) and
# a fixed part for mappings made later (CUDA is exempt: it maps terabytes of virtual space).
RESERVE_PER_CPU = 256 << 20
RESERVE_FIXED = 1 << 30
RSS_POLL_S = 0.02  # the worker itself: one statm read
TREE_POLL_S = 0.2  # its descendants: a scan of /proc
COMPILER_NAMES = frozenset(
    {
        "nvcc",
        "ptxas",
        "cicc",
        "fatbinary",
        "nvlink",
        "cc1",
        "cc1plus",
        "c++",
        "g++",
        "gcc",
        "cc",
        "clang",
        "clang++",
        "ninja",
        "ld",
        "ld.bfd",
        "ld.gold",
        "ld.lld",
        "collect2",
        "as",
    }
)


def memory_limit_bytes(config: EvalConfig) -> int:
    """The resident-memory limit: `memory_limit_gb`, or 75 % of the host's RAM."""
    if config.memory_limit_gb is not None:
        return int(config.memory_limit_gb * GIB)
    return int(psutil.virtual_memory().total * DEFAULT_MEMORY_FRACTION)


def address_space_cap(limit_bytes: int, current_vm_bytes: int, cpus: int | None = None) -> int:
    """RLIMIT_AS for the fast-fail path: what the process already maps, plus the resident
    limit, plus untouched reservations. Only an allocation that could never fit fails here."""
    count = cpus or os.cpu_count() or 1
    return current_vm_bytes + limit_bytes + RESERVE_FIXED + count * RESERVE_PER_CPU


def gib(n_bytes: float, exact: bool = False) -> str:
    """A size in GiB: short for a limit (0.5, 2), two decimals for a measured peak."""
    return f"{n_bytes / GIB:.2f} GiB" if exact else f"{n_bytes / GIB:.3g} GiB"


@dataclass(slots=True)
class TreeSample:
    rss_bytes: int  # the worker plus every descendant, as of the last tree scan
    compiling: bool  # a compiler process (COMPILER_NAMES) is alive in the tree


class TreeWatch:
    """Resident memory of a worker and its descendants, polled from the parent. The worker's
    own RSS is read every call (cheap); the descendants are rescanned every TREE_POLL_S.

    Orphans re-parented to the fork server (a subreaper) leave the tree; they are swept when
    the worker ends, and the tree is what the limit is meant to bound."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_bytes = 0
        self._root: psutil.Process | None = None
        self._children_rss = 0
        self._compiling = False
        self._next_scan = 0.0
        try:
            self._root = psutil.Process(pid)
        except psutil.Error:
            self._root = None

    def sample(self, now: float) -> TreeSample | None:
        """None once the worker is gone."""
        if self._root is None:
            return None
        try:
            own = self._root.memory_info().rss
        except psutil.Error:
            return None
        if now >= self._next_scan:
            self._next_scan = now + TREE_POLL_S
            self._children_rss, self._compiling = _scan(self._children())
        total = own + self._children_rss
        self.peak_bytes = max(self.peak_bytes, total)
        return TreeSample(total, self._compiling)

    def _children(self) -> list[psutil.Process]:
        assert self._root is not None
        try:
            return self._root.children(recursive=True)
        except psutil.Error:
            return []


def _scan(processes: Iterable[psutil.Process]) -> tuple[int, bool]:
    rss, compiling = 0, False
    for proc in processes:
        try:
            with proc.oneshot():
                rss += proc.memory_info().rss
                compiling = compiling or proc.name() in COMPILER_NAMES
        except psutil.Error:
            continue  # already gone
    return rss, compiling
