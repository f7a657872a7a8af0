"""The worker pins glibc's allocator so that reused memory costs no page faults on either side:
otherwise large CPU tensors time bimodally, measuring the kernel's page faults, not the kernel."""

from __future__ import annotations

import subprocess
import sys
import textwrap

PROBE = textwrap.dedent(
    """
    import resource, sys, torch
    # The worker's own imports (the fork server has them all loaded before it forks): the
    # heap a bare import of worker_setup leaves behaves differently from the worker's.
    from engine.bench.worker import steady_allocator
    if sys.argv[1] == "pinned":
        assert steady_allocator()
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(16 << 20).fill_(1.0)  # 64 MiB: above glibc's largest mmap threshold
    before = faults()
    for _ in range(5):
        torch.empty(16 << 20).fill_(1.0)
    print(faults() - before)
    """
)


def minor_faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


def test_reused_large_blocks_do_not_page_fault_when_pinned() -> None:
    pages_per_alloc = (64 << 20) // 4096
    # Default glibc maps and unmaps a block this size on every call: 5 calls, 5x the faults.
    assert minor_faults("default") >= 4.5 * pages_per_alloc
    # Pinned, the heap settles after one growth and then the freed block is simply reused.
    assert minor_faults("pinned") <= 1.5 * pages_per_alloc
