"""Per-task events from workers to the driver's sinks: a worker puts each event's JSON form
on a queue (a multiprocessing queue for local workers, a Ray queue on a cluster) and a
driver thread hands them, rebuilt as typed events, to the same sinks a serial batch uses
(`--events jsonl`, the progress display). Events of one task keep their order; events of
tasks running at once interleave, as they happen."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol

from engine.artifacts.events import Event, EventSink, event_from_dict

POLL_S = 0.2
_log = logging.getLogger(__name__)


class PutQueue(Protocol):
    def put(self, item: Any) -> None: ...


class QueueSink:
    """Worker side: an EventSink that sends each event over `queue`."""

    def __init__(self, target: PutQueue) -> None:
        self.target = target

    def __call__(self, event: Event) -> None:
        self.target.put(event.to_dict())


class EventPump:
    """Driver side: a thread that drains `get` (a blocking get with a timeout that raises
    `empty` when nothing came) into `sink` until stopped, then drains what is left."""

    def __init__(
        self,
        get: Callable[[float], Any],
        sink: EventSink,
        empty: type[BaseException] | tuple[type[BaseException], ...] = queue.Empty,
    ) -> None:
        self._get = get
        self._sink = sink
        self._empty = empty
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stark-event-pump", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._pump_one(POLL_S)
        while self._pump_one(0.05):  # what workers sent before they ended
            pass

    def _pump_one(self, timeout: float) -> bool:
        try:
            item = self._get(timeout)
        except self._empty:
            return False
        except (EOFError, OSError):  # the queue went away (its process or actor died)
            self._stop.set()
            return False
        try:
            self._sink(event_from_dict(item))
        except Exception:  # noqa: BLE001 - a malformed event or a broken sink never stops a batch
            _log.exception("could not relay event %r", item)
        return True

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
