"""The device lease: one timing at a time per device, across threads and processes.

Two evaluations timed side by side on one device disturb each other (they share its cores,
caches and memory bandwidth, or the GPU), so each evaluation's timing phase, where both
the reference and the candidate are timed, holds the device's lease. Compiling and the
correctness trials do not: they run in parallel. Every `Benchmarker` in every process that
shares a cache directory (the language server's job subprocesses, batch workers, the
concurrent evaluations of one `--parallel` search) takes turns through lock files in
`<cache dir>/leases/`:

- CPU: one lock per core the process may run on (`os.sched_getaffinity`), `cpu<N>.lock`; a
  lease holds all of its cores, so jobs pinned to disjoint cores time at once, and jobs
  whose core sets overlap take turns;
- CUDA: one lock per GPU, `cuda-<id>.lock`, the id being the first `CUDA_VISIBLE_DEVICES`
  entry (the GPU the worker uses), or its UUID when `nvidia-smi` names the index.

Locks are `fcntl.flock`: the kernel drops a lock when its holder dies, however it dies
(SIGKILL included), so a killed holder never blocks the device. The parent takes the lease,
never the worker, so candidate code never holds the lock or sees its descriptor. The worker
announces that it waits (the signed phase `lease`, with its device), the parent's sandbox
takes the lease and answers with a signed grant file (`TimingLease`), and releases it when
the worker leaves the timing phase or ends. Attempts are non-blocking and polled, so a waiter
can give up at its deadline (`EvalConfig.lease_timeout_s`); turns are not strictly FIFO.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.atomic_io import SCRATCH_FILE, atomic_write_text
from engine.bench.signed_files import LEASE_GRANT_FILE, lease_grant_mac

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lease, evaluations time as they come
    fcntl = None  # type: ignore[assignment]

LEASE_DIR_NAME = "leases"
POLL_S = 0.01  # between two attempts of a waiter (blocking `acquire` only)
GRANT_POLL_S = 0.005  # the worker, looking for its grant
NVIDIA_SMI_TIMEOUT_S = 10.0
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_sleep = time.sleep  # bound before any candidate exists (the worker imports this module)
_read_text = Path.read_text


class LeaseTimeout(TimeoutError):
    """The device stayed leased to someone else for longer than the caller would wait."""


def cpu_cores() -> list[int]:
    """The cores this process may run on, ascending."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - no affinity API: every core
        return list(range(os.cpu_count() or 1))


@functools.cache
def _gpu_uuids() -> dict[str, str]:
    """Index -> UUID of every GPU, from nvidia-smi (never CUDA: the parent must not
    initialise it); empty when it is missing or fails."""
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    pairs = (line.split(",", 1) for line in done.stdout.splitlines() if "," in line)
    return {index.strip(): uuid.strip() for index, uuid in pairs} if done.returncode == 0 else {}


def cuda_device_id(environ: dict[str, str] | None = None) -> str:
    """The GPU a worker uses: the first CUDA_VISIBLE_DEVICES entry (index, UUID or MIG id),
    an index given as its UUID where nvidia-smi knows it, so `0` and `GPU-...` of one GPU
    share a lock."""
    visible = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES")
    first = visible.split(",")[0].strip() if visible else ""
    first = first or "0"
    if first.isdigit():
        first = _gpu_uuids().get(first, first)
    return first


def lock_names(device: str) -> list[str]:
    """The lock files a timing on `device` ("cpu" or "cuda") holds, in the order taken."""
    if device.startswith("cuda"):
        return [f"cuda-{_UNSAFE.sub('_', cuda_device_id())}.lock"]
    return [f"cpu{core}.lock" for core in cpu_cores()]


@dataclass(slots=True)
class Lease:
    """A held lease: its open, locked descriptors. Closing them releases it."""

    names: list[str]
    fds: list[int] = field(default_factory=list)

    def release(self) -> None:
        fds, self.fds = self.fds, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing the descriptor drops its flock

    @property
    def held(self) -> bool:
        return bool(self.fds)


class DeviceLeases:
    """The lock files of one cache directory's devices."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def try_acquire(self, device: str) -> Lease | None:
        """The device's lease now, or None if someone holds any of its locks (all or
        nothing, so two waiters never each hold half of a core set). OSError when the lock
        files cannot be made (a read-only cache directory)."""
        names = lock_names(device)
        if fcntl is None:  # pragma: no cover
            return Lease(names)
        self.directory.mkdir(parents=True, exist_ok=True)
        lease = Lease(names)
        for name in names:
            fd = os.open(self.directory / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                lease.release()
                return None
            except BaseException:
                os.close(fd)
                lease.release()
                raise
            lease.fds.append(fd)
        return lease

    def acquire(self, device: str, timeout_s: float) -> tuple[Lease, float]:
        """Wait for the device's lease; returns it and the seconds waited. LeaseTimeout
        past `timeout_s`."""
        start = time.monotonic()
        while True:
            lease = self.try_acquire(device)
            waited = time.monotonic() - start
            if lease is not None:
                return lease, waited
            if waited >= timeout_s:
                raise LeaseTimeout(
                    f"the {device} lease ({', '.join(lock_names(device))} in {self.directory}) "
                    f"was held by another timing for over {timeout_s:g}s"
                )
            time.sleep(POLL_S)


class TimingLease:
    """One evaluation's lease as its sandbox handles it: asked for when the worker enters
    the `lease` phase, taken (polled), granted with a signed file, released when the timing
    phase ends or the worker does. Without `leases` (or when the lock files cannot be made)
    the grant comes at once and `note` says why there was no lease."""

    def __init__(self, leases: DeviceLeases | None, eval_dir: Path, nonce: str) -> None:
        self.leases = leases
        self.eval_dir = eval_dir
        self.nonce = nonce
        self.device: str | None = None
        self.asked_at: float | None = None
        self.granted_at: float | None = None
        self.lease: Lease | None = None
        self.note: str | None = None
        self.bypassed = False  # the worker started timing without a grant

    @property
    def wait_s(self) -> float | None:
        """Seconds from the worker's ask to the grant (None: it never asked, or never got it)."""
        if self.asked_at is None or self.granted_at is None:
            return None
        return self.granted_at - self.asked_at

    def ask(self, device: str, now: float) -> None:
        self.device, self.asked_at = device, now

    def poll(self, now: float) -> None:
        """Take the lease if it is free and grant it; a no-op once granted."""
        if self.device is None or self.granted_at is not None:
            return
        if self.leases is not None:
            try:
                self.lease = self.leases.try_acquire(self.device)
            except OSError as exc:
                self.note = f"no device lease ({exc}); timed without one"
            else:
                if self.lease is None:
                    return
        self.granted_at = now
        atomic_write_text(
            self.eval_dir / LEASE_GRANT_FILE, lease_grant_mac(self.nonce), **SCRATCH_FILE
        )

    def timing_started(self) -> None:
        """The worker announced the timing phase: fine if it was granted, else a bypass."""
        if self.granted_at is None:
            self.bypassed = True

    def release(self) -> None:
        if self.lease is not None:
            self.lease.release()
            self.lease = None


def await_grant(eval_dir: Path, expected: str) -> None:
    """The worker's side: wait until the parent's grant (`expected`, the MAC the worker
    computes under its nonce) is in the grant file. Unbounded here: the sandbox kills the
    worker at the lease deadline."""
    path = eval_dir / LEASE_GRANT_FILE
    while True:
        try:
            if _read_text(path).strip() == expected:
                return
        except OSError:
            pass
        _sleep(GRANT_POLL_S)
