"""CPU time that *other* processes used while the worker was timing.

Both sides are timed in one process, so load from elsewhere on the machine (another build,
another benchmark, a browser) slows whichever side it happens to overlap and widens both
spreads. The verdict can't remove that, but it can say so: over the timing window, the
machine's busy CPU time (every CPU, from /proc/stat via psutil) less the CPU time of this
worker and its descendants is the load of everything else, in cores. Hypervisor steal time
counts as other load too: it is CPU the timed code was ready to use and did not get.

The counters tick at 10 ms (USER_HZ), so a window shorter than `MIN_WINDOW_S` can't tell
half a core from rounding; it reports nothing rather than a guess.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

import psutil

EXTERNAL_LOAD_CORES = 0.5  # more than this, on average over the window, gets the flag
MIN_WINDOW_S = 0.25  # shorter windows are within the counters' rounding

# Bound at import (in the fork server, before any candidate exists): patching psutil later
# can't hide the load from the harness.
_cpu_times = psutil.cpu_times
_Process = psutil.Process
_monotonic = time.monotonic
_getpid = os.getpid
_BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq", "steal")  # guest is inside user


def machine_busy_s() -> float:
    """CPU seconds all CPUs have spent not idle since boot."""
    times = _cpu_times()
    return sum(getattr(times, name, 0.0) for name in _BUSY_FIELDS)


def own_tree_s(process: psutil.Process) -> float:
    """CPU seconds of `process` (all its threads), its reaped children and its live
    descendants."""
    times = process.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    with contextlib.suppress(psutil.Error):
        for child in process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child_times = child.cpu_times()
                total += child_times.user + child_times.system
    return total


@dataclass(frozen=True, slots=True)
class LoadWindow:
    """Counters at the start of a timing window; `finish()` turns them into a load figure."""

    process: psutil.Process
    started: float
    busy_s: float
    own_s: float

    @classmethod
    def begin(cls) -> LoadWindow:
        process = _Process(_getpid())
        return cls(process, _monotonic(), machine_busy_s(), own_tree_s(process))

    def finish(self) -> float | None:
        """Average cores used by other processes since `begin()`, or None when the window
        was too short to tell (or the counters could not be read)."""
        try:
            busy_s, own_s = machine_busy_s(), own_tree_s(self.process)
        except (psutil.Error, OSError):
            return None
        window_s = _monotonic() - self.started
        if window_s < MIN_WINDOW_S:
            return None
        others_s = (busy_s - self.busy_s) - (own_s - self.own_s)
        return max(0.0, others_s / window_s)
