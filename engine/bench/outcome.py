"""How a worker process ended, as the sandbox saw it from outside: the facts the verdict
is built from when the worker could not write one itself."""

from __future__ import annotations

import os
from dataclasses import dataclass

from engine.bench.deadlines import RunPlan


@dataclass(slots=True)
class MemoryExceeded:
    """The watchdog killed the worker: its process tree's resident memory passed the limit."""

    limit_bytes: int
    peak_bytes: int
    phase: str  # the phase it happened in ("start"/"reference": before the candidate existed)
    reference_peak_bytes: int  # the tree's peak before the candidate was loaded


@dataclass(slots=True)
class WorkerOutcome:
    """How the worker process ended, as seen from outside it."""

    wait_status: int | None  # raw status from waitpid; None if it was never reaped
    timed_out_phase: str | None  # the phase (deadlines.PHASE_ORDER) we killed it for time in
    last_phase: str  # the last phase the worker reported
    wall_s: float
    compile_s: float | None  # time spent before the worker entered the run phase
    deadline_s: float | None = None  # how long the deadline that passed was
    memory: MemoryExceeded | None = None
    plan: RunPlan | None = None  # the run phases' deadlines, sized from the reference
    compile_seen: bool = False  # compile work was seen in the phase that timed out
    dump_offset: int | None = None  # log.txt size when the stack dump was requested
    phase_s: dict[str, float] | None = None  # seconds each phase took, as this side saw it
    lease_wait_s: float | None = None  # from the worker's ask for the device lease to the grant
    lease_bypassed: bool = False  # the worker started timing without the grant
    lease_note: str | None = None  # why there was no lease (e.g. a read-only cache dir)

    @property
    def signal(self) -> int | None:
        if self.wait_status is not None and os.WIFSIGNALED(self.wait_status):
            return os.WTERMSIG(self.wait_status)
        return None

    @property
    def exit_code(self) -> int | None:
        if self.wait_status is not None and os.WIFEXITED(self.wait_status):
            return os.WEXITSTATUS(self.wait_status)
        return None
