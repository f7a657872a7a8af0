"""The event stream is a contract with the language server and the VS Code tree view."""

from __future__ import annotations

import io
import json

import pytest

from engine.artifacts.events import (
    EVENT_TYPES,
    BestImproved,
    EventFanout,
    JsonlEventWriter,
    NodeBenchmarked,
    NodeSnapshot,
    RoundFinished,
    TaskFailed,
    event_from_dict,
)

NODE = NodeSnapshot(
    id=2, parent=0, phase="optimize", runnable=True, buggy=False, speedup=1.5, round=1
)


def test_every_event_round_trips_through_json() -> None:
    samples = [
        NodeBenchmarked(task_id="t", round=1, node=NODE, result={"correct": True}),
        RoundFinished(
            task_id="t", round=1, rounds=3, best_speedup=1.5, nodes=2, buggy=0, tree=[NODE]
        ),
        BestImproved(task_id="t", round=1, node_id=2, speedup=1.5, code_path="code/node_0002.py"),
        TaskFailed(task_id="t", error="boom"),
    ]
    for event in samples:
        data = json.loads(event.to_json())
        assert data["event"] == event.kind and data["schema"] == 1
        assert event_from_dict(data) == event


def test_event_kinds_are_the_documented_ones() -> None:
    assert set(EVENT_TYPES) == {
        "task_started",
        "node_selected",
        "llm_call_started",
        "llm_call_finished",
        "node_benchmarked",
        "best_improved",
        "round_finished",
        "task_finished",
        "task_failed",
    }


def test_unknown_fields_are_ignored_at_every_level() -> None:
    data = json.loads(
        RoundFinished(
            task_id="t", round=1, rounds=2, best_speedup=None, nodes=1, buggy=0, tree=[NODE]
        ).to_json()
    )
    data["future_field"] = 1
    data["tree"][0]["future_node_field"] = "x"
    event = event_from_dict(data)
    assert isinstance(event, RoundFinished) and event.tree == [NODE]


def test_unknown_event_type_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown event type 'nope'"):
        event_from_dict({"event": "nope"})


def test_jsonl_writer_emits_one_line_per_event() -> None:
    stream = io.StringIO()
    writer = JsonlEventWriter(stream)
    writer(TaskFailed(task_id="t", error="a"))
    writer(TaskFailed(task_id="t", error="b"))
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["error"] for line in lines] == ["a", "b"]


def test_a_failing_sink_does_not_stop_the_others() -> None:
    seen: list[str] = []

    def broken(_event: object) -> None:
        raise RuntimeError("consumer bug")

    fanout = EventFanout(broken, lambda e: seen.append(e.kind))
    fanout(TaskFailed(task_id="t", error="x"))
    assert seen == ["task_failed"]
