"""One limit on model calls for every process of a run: at most N calls in flight and at most
R calls started in any 60 s, however many workers (or threads) make them.

Why files: the workers of a batch are separate processes (or Ray tasks on nodes that share
the run directory), and an endpoint's limits apply to all of them together. State lives in
one directory (`run_dir/.rate_limit/`):

- `slot-K.lock` (K < N): a call holds an `flock` on one of them while its request is in
  flight. The kernel releases it when the holder dies, so a killed worker never leaks a slot.
- `starts.json`: the start times (unix seconds) of the calls of the last 60 s, read and
  rewritten under `starts.lock`. A call that would be the R+1-th of the window waits until
  the oldest start leaves it.

A call waits as long as it takes, up to `max_wait_s`; past that it raises
`RateLimitTimeout` (an `AgentError`: that expansion fails, the search goes on).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from engine.agents.base import AgentError
from engine.atomic_io import atomic_write_text

WINDOW_S = 60.0
POLL_S = 0.05
DEFAULT_MAX_WAIT_S = 3600.0
LIMITER_DIR = ".rate_limit"


class RateLimitTimeout(AgentError):
    """A call waited `max_wait_s` for a slot or a start in the window and gave up."""


@dataclass(frozen=True, slots=True)
class RateLimits:
    """None: no limit of that kind."""

    max_concurrent: int | None = None
    per_minute: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_concurrent", "per_minute"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
                raise ValueError(f"{name} must be a whole number >= 1, not {value!r}")

    @property
    def active(self) -> bool:
        return self.max_concurrent is not None or self.per_minute is not None

    def describe(self) -> str:
        parts = []
        if self.max_concurrent is not None:
            parts.append(f"{self.max_concurrent} concurrent")
        if self.per_minute is not None:
            parts.append(f"{self.per_minute}/min")
        return ", ".join(parts) or "unlimited"


class CallLimiter:
    """`with limiter.slot(): <one request>` waits for a free slot and a start in the window.

    Safe to share between threads (every acquisition opens its own file) and between
    processes that name the same directory."""

    def __init__(
        self,
        directory: Path,
        limits: RateLimits,
        *,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.directory = Path(directory)
        self.limits = limits
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._sleep = sleep
        self.directory.mkdir(parents=True, exist_ok=True)

    @classmethod
    def for_run(cls, run_dir: Path, limits: RateLimits) -> CallLimiter:
        return cls(Path(run_dir) / LIMITER_DIR, limits)

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a concurrency slot for the body; the start is counted when the body begins."""
        deadline = self._clock() + self.max_wait_s
        with self._concurrency_slot(deadline):
            self._take_start(deadline)
            yield

    # --- concurrency ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _concurrency_slot(self, deadline: float) -> Iterator[None]:
        count = self.limits.max_concurrent
        if count is None:
            yield
            return
        while True:
            for index in range(count):
                fd = os.open(self.directory / f"slot-{index}.lock", os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    os.close(fd)
                return
            self._wait(deadline, f"all {count} call slots busy")

    # --- starts per minute ------------------------------------------------------------------

    def _take_start(self, deadline: float) -> None:
        per_minute = self.limits.per_minute
        if per_minute is None:
            return
        while True:
            wait = self._try_start(per_minute)
            if wait <= 0:
                return
            self._wait(deadline, f"{per_minute} calls started in the last minute", wait)

    def _try_start(self, per_minute: int) -> float:
        """Record a start now if the window has room (returns 0), else the seconds until the
        oldest start leaves the window."""
        with self._locked(self.directory / "starts.lock"):
            now = self._clock()
            starts = [t for t in self._read_starts() if now - t < WINDOW_S]
            if len(starts) < per_minute:
                starts.append(now)
                atomic_write_text(self.directory / "starts.json", json.dumps(starts), durable=False)
                return 0.0
            return min(starts) + WINDOW_S - now

    def _read_starts(self) -> list[float]:
        try:
            data = json.loads((self.directory / "starts.json").read_text())
        except (OSError, ValueError):
            return []  # none yet, or unreadable: start a fresh window
        if not isinstance(data, list):
            return []
        return [float(t) for t in data if isinstance(t, int | float)]

    def starts_in_window(self) -> int:
        """How many calls started in the last 60 s (for reports and tests)."""
        with self._locked(self.directory / "starts.lock"):
            now = self._clock()
            return sum(1 for t in self._read_starts() if now - t < WINDOW_S)

    # --- helpers ----------------------------------------------------------------------------

    def _wait(self, deadline: float, why: str, seconds: float = POLL_S) -> None:
        now = self._clock()
        if now >= deadline:
            raise RateLimitTimeout(
                f"model call gave up after waiting {self.max_wait_s:.0f} s for the rate limit "
                f"({self.limits.describe()}): {why}"
            )
        self._sleep(max(0.0, min(seconds, deadline - now, 1.0)))

    @staticmethod
    @contextlib.contextmanager
    def _locked(path: Path) -> Iterator[None]:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock
