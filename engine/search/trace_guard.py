"""The search's handle on the Trace module: a failing trace write is logged, never fatal.

The task directory keeps llm_io, metrics and the tree regardless, so a broken trace must
not end a search that is otherwise fine. The Trace serialises its writers itself, so the
expansions of a parallel search share one (`last_files` is per thread).
"""

from __future__ import annotations

from typing import Any

from engine.artifacts.taskdir import TaskDir
from engine.trace import Trace
from engine.trace.sanitize import MIN_SECRET_LEN


class SafeTrace:
    """Delegates to the Trace; an exception in a write is logged to search.log instead."""

    def __init__(self, trace: Any, task: TaskDir) -> None:
        self._trace = trace
        self._task = task

    @property
    def last_files(self) -> list[Any]:
        return list(getattr(self._trace, "last_files", []))

    def _guard(self, name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self._trace, name)(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            self._task.log(f"trace {name} failed: {type(exc).__name__}: {exc}")
            return 0

    def insert_designer_or_coder_record(self, *args: Any, **kwargs: Any) -> int:
        return self._guard("insert_designer_or_coder_record", *args, **kwargs)

    def insert_tester_record(self, *args: Any, **kwargs: Any) -> int:
        return self._guard("insert_tester_record", *args, **kwargs)

    def insert_conductor_record(self, *args: Any, **kwargs: Any) -> None:
        self._guard("insert_conductor_record", *args, **kwargs)


def open_trace(op_name: str, task: TaskDir) -> SafeTrace:
    """The task's Trace, told the run's known secrets (e.g. a key read through a custom
    environment variable name, which the trace's own heuristics cannot know about)."""
    secrets = [s for s in task.redact.secrets if len(s) >= MIN_SECRET_LEN]
    return SafeTrace(Trace(op_name, task.task_id, task.trace_dir, secrets=secrets), task)
