"""Where each local worker runs: one GPU per worker (CUDA_VISIBLE_DEVICES) on a GPU machine,
else its own set of CPU cores (sched_setaffinity, and torch's threads = its cores), so
workers that time kernels at the same time do not time each other's work.

More workers than GPUs share them round robin (the device lease, engine/bench/lease.py,
makes timings on one GPU take turns). More workers than CPU cores is refused: two workers
timing on one core would each measure the other.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from dataclasses import dataclass

PR_SET_PDEATHSIG = 1
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class PlacementError(ValueError):
    """The machine cannot host the requested workers; the message says why."""


@dataclass(frozen=True, slots=True)
class WorkerSlot:
    index: int
    cpus: tuple[int, ...] | None = None  # None: not pinned (GPU workers build on every core)
    gpu: str | None = None  # this worker's CUDA_VISIBLE_DEVICES

    def describe(self) -> str:
        if self.gpu is not None:
            return f"worker {self.index}: GPU {self.gpu}"
        cpus = ",".join(map(str, self.cpus or ()))
        return f"worker {self.index}: CPU cores {cpus}"


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no usable CUDA runtime: no GPUs
        return []


def plan_slots(workers: int, device: str) -> list[WorkerSlot]:
    """One slot per worker for `device` (auto: GPUs when there are any)."""
    if workers < 1:
        raise PlacementError(f"--workers must be >= 1, not {workers}")
    gpus = visible_gpus() if device != "cpu" else []
    if device == "cuda" and not gpus:
        raise PlacementError("--device cuda, but no GPU is visible to this process")
    if gpus:
        return [WorkerSlot(i, gpu=gpus[i % len(gpus)]) for i in range(workers)]
    cores = sorted(os.sched_getaffinity(0))
    if workers > len(cores):
        raise PlacementError(
            f"--workers {workers} on {len(cores)} CPU cores: each worker needs a core of its "
            "own to time on"
        )
    share, extra = divmod(len(cores), workers)
    slots, start = [], 0
    for i in range(workers):
        size = share + (1 if i < extra else 0)
        slots.append(WorkerSlot(i, cpus=tuple(cores[start : start + size])))
        start += size
    return slots


def enter_slot(slot: WorkerSlot) -> None:
    """In the worker process, before torch is imported: take the slot's GPU or cores."""
    if slot.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = slot.gpu
    if slot.cpus:
        os.sched_setaffinity(0, slot.cpus)
        for name in THREAD_VARIABLES:  # inherited by the benchmarker's fork server
            os.environ[name] = str(len(slot.cpus))


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this worker when the driver dies (even by kill -9), so no
    worker of a killed batch keeps writing to a task that a resume runs again."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
