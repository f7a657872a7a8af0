"""The processes a candidate left behind in its worker, found and killed.

Read straight from /proc with os functions bound when the fork server imports this
module, before any candidate exists. psutil would do the same walk, but it looks
`os.listdir` and `open` up at call time, so a candidate that patched them could hide
its children from the sweep; these bound copies it cannot reach.
"""

from __future__ import annotations

import contextlib
import os
import signal

_os_open, _os_close, _os_read = os.open, os.close, os.read
_os_listdir, _os_kill, _os_waitpid = os.listdir, os.kill, os.waitpid
_os_getpid, _os_getpgrp = os.getpid, os.getpgrp
CHILD_KILL_PASSES = 5  # a process that forks while we kill gets a few more sweeps
MAX_DESCENDANTS = 10_000  # bounds the walk against a fork bomb


def read_proc_file(path: str) -> str:
    """A small /proc file's text; empty if it is gone or unreadable."""
    try:
        fd = _os_open(path, os.O_RDONLY)
    except OSError:
        return ""
    try:
        return _os_read(fd, 1 << 16).decode(errors="replace")
    except OSError:
        return ""
    finally:
        _os_close(fd)


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: state, ppid, pgrp, session, ..."""
    text = read_proc_file(f"/proc/{pid}/stat")
    return text[text.rfind(")") + 2 :].split() if ")" in text else []


def _children_of(pid: int) -> list[int]:
    try:
        tasks = _os_listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    return [
        int(child)
        for tid in tasks
        for child in read_proc_file(f"/proc/{pid}/task/{tid}/children").split()
    ]


def live_descendants() -> list[int]:
    """Running processes the candidate left behind: descendants of this worker (via
    /proc/*/task/*/children, recursively) plus, when the worker leads its own process group
    (it does under the sandbox), members of that group, which catches a double fork. Zombies
    are reaped and not counted: they use no CPU."""
    me = _os_getpid()
    found: set[int] = set()
    pending = _children_of(me)
    while pending and len(found) < MAX_DESCENDANTS:
        pid = pending.pop()
        if pid not in found:
            found.add(pid)
            pending.extend(_children_of(pid))
    if _os_getpgrp() == me:
        for entry in _os_listdir("/proc"):
            if entry.isdigit() and int(entry) != me:
                fields = _stat_fields(int(entry))
                if len(fields) > 2 and fields[2] == str(me):
                    found.add(int(entry))
    live: list[int] = []
    for pid in sorted(found):
        fields = _stat_fields(pid)
        if not fields:
            continue  # already gone
        if fields[0] in ("Z", "X"):
            with contextlib.suppress(ChildProcessError, OSError):
                _os_waitpid(pid, os.WNOHANG)
            continue
        live.append(pid)
    return live


def kill_descendants() -> int:
    """SIGKILL every live descendant (a few sweeps, for ones forked meanwhile); how many the
    first sweep found."""
    first = 0
    for sweep in range(CHILD_KILL_PASSES):
        pids = live_descendants()
        if sweep == 0:
            first = len(pids)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(OSError):
                _os_kill(pid, signal.SIGKILL)
        for pid in pids:  # reap our own children; orphans go to the fork server (a subreaper)
            with contextlib.suppress(ChildProcessError, OSError):
                _os_waitpid(pid, 0)
    return first
