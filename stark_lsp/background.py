"""Fire-and-forget coroutines that are neither lost nor silent.

asyncio keeps only a weak reference to a task: one started with
`ensure_future` and dropped can be garbage-collected mid-flight, and an
exception it raises is only reported (if at all) when it is collected. Every
background task of the server goes through `BackgroundTasks.spawn`, which holds
a strong reference until the task ends and logs its exception."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        """Schedule `coro` on the running loop; `what` names it in the log."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._finished(done, what))
        return task

    def _finished(self, task: asyncio.Task[Any], what: str) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("background task %s failed: %r", what, exc, exc_info=exc)

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
