"""Stopping an engine job for good. The engine runs in its own session (process
group), but the benchmarker's fork server and its workers start their own
sessions too, so killing one group is not enough: we snapshot the whole process
tree from /proc first, then kill every group in it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

PROC = Path("/proc")


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, pgid) of a live process, None when it is gone."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # comm may hold spaces and parentheses: split after the last ')'
    fields = raw[raw.rfind(")") + 2 :].split()
    try:
        return int(fields[1]), int(fields[2])
    except (IndexError, ValueError):
        return None


def process_tree(root: int) -> dict[int, int]:
    """{pid: pgid} for `root` and all its live descendants (Linux /proc)."""
    parents: dict[int, list[int]] = {}
    groups: dict[int, int] = {}
    try:
        entries = [int(p.name) for p in PROC.iterdir() if p.name.isdigit()]
    except OSError:
        entries = []
    for pid in entries:
        info = _stat(pid)
        if info is None:
            continue
        ppid, pgid = info
        parents.setdefault(ppid, []).append(pid)
        groups[pid] = pgid
    tree: dict[int, int] = {}
    stack = [root]
    while stack:
        pid = stack.pop()
        if pid in tree:
            continue
        if pid in groups:
            tree[pid] = groups[pid]
        stack.extend(parents.get(pid, []))
    return tree


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return False
    state = raw[raw.rfind(")") + 2 :].split()[:1]
    return state != ["Z"]


def group_alive(pgid: int) -> bool:
    """True while any non-zombie process is still in process group `pgid`."""
    try:
        entries = [int(p.name) for p in PROC.iterdir() if p.name.isdigit()]
    except OSError:
        return False
    for pid in entries:
        info = _stat(pid)
        if info is not None and info[1] == pgid and alive(pid):
            return True
    return False


def kill_tree_now(root: int, tree: dict[int, int] | None = None) -> None:
    """SIGKILL every process group of the tree rooted at `root` (never our own group)."""
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
