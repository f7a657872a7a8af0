"""Stopping an engine job for good. The engine runs in its own session (process
group), but the benchmarker's fork server and its workers start their own
sessions too, so killing one group is not enough: we snapshot the whole process
tree first (psutil), then kill every group in it and every process we saw.

psutil is imported when a job is stopped, not at start-up (it costs ~20 ms to
import, and most sessions stop no job)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal


def process_tree(root: int) -> dict[int, int]:
    """{pid: pgid} for `root` and all its live descendants."""
    import psutil

    try:
        top = psutil.Process(root)
        members = [top, *top.children(recursive=True)]
    except psutil.Error:
        return {}
    tree: dict[int, int] = {}
    for process in members:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            tree[process.pid] = os.getpgid(process.pid)
    return tree


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def group_alive(pgid: int) -> bool:
    """True while any non-zombie process is still in process group `pgid`."""
    import psutil

    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                return True
    return False


def kill_tree_now(root: int, tree: dict[int, int] | None = None) -> None:
    """SIGKILL every process group of the tree rooted at `root` (never our own group),
    then every process of it (one that left its group is still ours to end)."""
    tree = {**(tree or {}), **process_tree(root)}
    own = os.getpgid(0)
    for pgid in sorted(set(tree.values()) | {root}):
        if pgid in (0, 1, own):
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    for pid in tree:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


async def stop_tree(process: asyncio.subprocess.Process, grace_s: float = 1.5) -> None:
    """Interrupt the engine (so it can tidy up), then kill whatever is left of its tree."""
    if process.returncode is not None:
        return
    tree = process_tree(process.pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGINT)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(process.wait(), grace_s)
    kill_tree_now(process.pid, tree)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(process.wait(), 5.0)
