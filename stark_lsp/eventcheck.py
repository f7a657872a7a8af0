"""Type checks for engine events read from a pipe.

`engine.artifacts.events.event_from_dict` builds the dataclasses without checking what is
inside them, so a line such as `{"event": "round_finished", "round": "x", ...}`
would only fail later, in job bookkeeping or while serialising a notification
(a NaN is not even valid JSON for the client). The server checks each event
against the dataclass annotations once, right after parsing, and skips any that
do not conform."""

from __future__ import annotations

import dataclasses
import math
import types
from functools import cache
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints

from engine.artifacts import events as engine_events


class MalformedEvent(ValueError):
    """An event whose fields do not have the types the schema promises."""


@cache
def _hints(cls: type) -> dict[str, Any]:
    return {
        name: hint
        for name, hint in get_type_hints(cls, vars(engine_events)).items()
        if get_origin(hint) is not ClassVar and name in {f.name for f in dataclasses.fields(cls)}
    }


def _conforms(value: Any, hint: Any) -> bool:
    origin = get_origin(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_conforms(value, arg) for arg in get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = get_args(hint) or (Any,)
        return isinstance(value, list) and all(_conforms(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        )
    if dataclasses.is_dataclass(hint):
        return isinstance(value, hint) and _first_problem(value) is None
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _first_problem(obj: Any) -> str | None:
    for name, hint in _hints(type(obj)).items():
        value = getattr(obj, name)
        if not _conforms(value, hint):
            return f"{type(obj).__name__}.{name} = {value!r:.80} is not {hint}"
    return None


def check_event(event: engine_events.Event) -> None:
    """Raise MalformedEvent naming the first field of the wrong type."""
    problem = _first_problem(event)
    if problem is not None:
        raise MalformedEvent(problem)
