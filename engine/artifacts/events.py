"""Typed events of a search, available in-process (an `EventSink` callable) and
as JSON lines (`stark optimize --events jsonl`). The language server and the VS
Code tree view are built on this stream; docs/events.md documents the schema.

Every event serialises to one JSON object with `event` (the type name below),
`ts` (unix seconds) and `task_id`, plus the fields of its dataclass.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, TextIO

SCHEMA_VERSION = 1
_log = logging.getLogger(__name__)


@dataclass(slots=True)
class NodeSnapshot:
    """Compact view of one tree node, as the editor shows it."""

    id: int
    parent: int | None
    phase: str  # seed | optimize | debug
    runnable: bool
    buggy: bool
    speedup: float | None
    round: int
    score: float = 0.0
    code_path: str = ""
    error: str | None = None
    baseline: bool = False  # the code is the reference (or equivalent): never the best


@dataclass(slots=True, kw_only=True)
class Event:
    kind: ClassVar[str] = "event"
    task_id: str
    ts: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["event"] = self.kind
        data["schema"] = SCHEMA_VERSION
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=str)


@dataclass(slots=True, kw_only=True)
class TaskStarted(Event):
    kind: ClassVar[str] = "task_started"
    reference: str
    task_dir: str
    rounds: int
    agent: str
    model: str
    device: str


@dataclass(slots=True, kw_only=True)
class NodeSelected(Event):
    kind: ClassVar[str] = "node_selected"
    round: int
    node_id: int
    mode: str  # explore | exploit
    action: str  # optimize | debug


@dataclass(slots=True, kw_only=True)
class LLMCallStarted(Event):
    kind: ClassVar[str] = "llm_call_started"
    round: int
    role: str  # seed | plan | code | debug | repair
    model: str


@dataclass(slots=True, kw_only=True)
class LLMCallFinished(Event):
    kind: ClassVar[str] = "llm_call_finished"
    round: int
    role: str
    model: str
    ok: bool
    latency_s: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None
    call_kind: str = "llm"  # llm: a real model; agent: the offline agent (no tokens)


@dataclass(slots=True, kw_only=True)
class NodeBenchmarked(Event):
    kind: ClassVar[str] = "node_benchmarked"
    round: int
    node: NodeSnapshot
    result: dict[str, Any]  # EvalResult.to_dict()
    trace_files: list[str] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class BestImproved(Event):
    kind: ClassVar[str] = "best_improved"
    round: int
    node_id: int
    speedup: float
    code_path: str


@dataclass(slots=True, kw_only=True)
class RoundFinished(Event):
    kind: ClassVar[str] = "round_finished"
    round: int
    rounds: int
    best_speedup: float | None
    nodes: int
    buggy: int
    tree: list[NodeSnapshot] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class TaskFinished(Event):
    kind: ClassVar[str] = "task_finished"
    summary: dict[str, Any]


@dataclass(slots=True, kw_only=True)
class TaskFailed(Event):
    kind: ClassVar[str] = "task_failed"
    error: str


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (
        TaskStarted,
        NodeSelected,
        LLMCallStarted,
        LLMCallFinished,
        NodeBenchmarked,
        BestImproved,
        RoundFinished,
        TaskFinished,
        TaskFailed,
    )
}

EventSink = Callable[[Event], None]


def event_from_dict(data: dict[str, Any]) -> Event:
    """Rebuild a typed event from its JSON form (unknown keys are ignored)."""
    kind = data.get("event")
    cls = EVENT_TYPES.get(kind or "")
    if cls is None:
        raise ValueError(f"unknown event type {kind!r}")
    names = set(cls.__dataclass_fields__)
    values = {k: v for k, v in data.items() if k in names}
    if "node" in values and isinstance(values["node"], dict):
        values["node"] = _snapshot(values["node"])
    if "tree" in values:
        values["tree"] = [_snapshot(n) if isinstance(n, dict) else n for n in values["tree"]]
    return cls(**values)


def _snapshot(data: dict[str, Any]) -> NodeSnapshot:
    """Newer producers may add fields: consumers ignore what they do not know."""
    names = NodeSnapshot.__dataclass_fields__
    return NodeSnapshot(**{k: v for k, v in data.items() if k in names})


class JsonlEventWriter:
    """An EventSink that writes one JSON object per line and flushes, so a
    consumer reading a pipe sees each event as it happens."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __call__(self, event: Event) -> None:
        self._stream.write(event.to_json() + "\n")
        self._stream.flush()


class EventFanout:
    """Deliver each event to several sinks; a failing sink never breaks the search."""

    def __init__(self, *sinks: EventSink) -> None:
        self.sinks: list[EventSink] = [s for s in sinks if s is not None]

    def add(self, sink: EventSink) -> None:
        self.sinks.append(sink)

    def __call__(self, event: Event) -> None:
        for sink in self.sinks:
            try:
                sink(event)
            except Exception:  # a broken consumer must not stop the search
                _log.exception("event sink %r failed on %s", sink, event.kind)
