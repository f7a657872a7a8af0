"""`stark optimize --parallel K` against the fake OpenAI server (which answers every request
on its own thread, each after `delay_s`), with the real benchmarker: agent calls overlap
each other and the benchmarks, and the run stays consistent (dense node ids, one usage row
and one llm_io pair per call, trace steps unique with each check under its own call's step,
each round's events in order, rounds committed in order).

The script answers by what a request asks and for which parent, never by arrival order, so
the same tree comes out however the parallel expansions interleave (test_parallel_resume.py
relies on it)."""

from __future__ import annotations

import csv
import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from engine.artifacts.events import Event, event_from_dict
from engine.cli import main
from tests.fakes import FakeReply
from tests.search.conftest import QUICK
from tests.search.test_e2e_scripted import ANCHORED, PLAN, SEED, fenced

DELAY_S = 1.0
ROUNDS = 7
PARALLEL = 3

_PARENT = re.compile(r"## (?:Current kernel|Anchored code|Failing kernel): node (\d+) ")


def kernel(tag: str, buggy: bool) -> str:
    body = "return y.mul_(2.0)  # forgot the +1" if buggy else "return y * 2.0 + 1.0"
    return SEED.replace("return y * 2.0 + 1.0", f"{body}  # {tag}")


class ParentScript:
    """Seed; a plan for every parent; code that depends on the parent only (children of a
    parent whose id is 1 mod 3 are buggy, siblings are byte-identical, so the later one
    reuses the earlier one's verdict); a fix for every buggy node. Each answer comes after
    `delay_s` times 0.5, 1 or 1.5 (by the parent's id), so rounds of different parents
    finish at different times. Thread-safe; `spans` are the calls' (arrival, answer) times."""

    def __init__(self, delay_s: float = DELAY_S) -> None:
        self.delay_s = delay_s
        self.calls: list[str] = []
        self.spans: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> FakeReply:
        prompt = body["messages"][-1]["content"]
        parent = _PARENT.search(prompt)
        delay = self.delay_s * (1 + int(parent[1]) % 3 if parent else 1) / 2
        if "You are the planner" in prompt:
            kind, text = "plan", f"{fenced('json', json.dumps(PLAN))}\n{fenced('python', ANCHORED)}"
        elif "You are the coder" in prompt:
            assert parent is not None, prompt[:500]
            node = int(parent[1])
            kind = "code"
            text = fenced("python", kernel(f"child of {node}", buggy=node % 3 == 1))
        elif "You are the debugger" in prompt:
            assert parent is not None, prompt[:500]
            kind, text = "debug", fenced("python", kernel(f"fix of {parent[1]}", buggy=False))
        else:
            kind, text = "seed", fenced("python", SEED)
        with self._lock:
            self.calls.append(kind)
            self.spans.append((time.time(), time.time() + delay))
        return FakeReply(text=text, delay_s=delay)


def optimize_args(reference: Path, out: Path, base_url: str, *extra: str) -> list[str]:
    return [
        "optimize",
        str(reference),
        "--agent",
        "openai",
        "--base-url",
        base_url,
        "--model",
        "fake-model",
        "--epsilon",
        "1.0",  # explore only: selection depends on runnable/buggy, never on timings
        "--device",
        "cpu",
        "--out",
        str(out),
        "--events",
        "jsonl",
        *QUICK,
        *extra,
    ]


def tree_shape(task_dir: Path) -> list[tuple[int, int | None, str, bool]]:
    nodes = json.loads((task_dir / "tree.json").read_text())["tree"]["nodes"]
    return [
        (n["node_id"], n["parent_id"], n["phase"], bool(n["metrics"] and n["metrics"]["correct"]))
        for n in nodes
    ]


def trace_index(task_dir: Path) -> list[dict[str, Any]]:
    (index,) = task_dir.glob("trace/*/trace_index.jsonl")
    return [json.loads(line) for line in index.read_text().splitlines() if line.strip()]


def check_trace(records: list[dict[str, Any]]) -> None:
    """Every action has its own step; every check sits under its own call's step."""
    actions = [r for r in records if r["kind"] == "action"]
    steps = [r["step"] for r in actions]
    assert sorted(steps) == list(range(1, len(steps) + 1)), steps
    by_step = {r["step"]: r for r in actions}
    for record in records:
        if record["action"] in ("CheckDesigner", "CheckCoder") and "duplicate_of" not in str(
            record.get("detail")
        ):
            call = by_step[record["step"]]
            assert call["node_id"] == record["node_id"], (record, call)
            assert call["action"] in ("DO_DESIGNER", "FIX_DESIGNER", "DO_CODER", "FIX_CODER")


def check_events(events: list[Event], rounds: int) -> None:
    """Per round: node_selected, then its calls (each started before it finished), then
    node_benchmarked, best_improved, round_finished; rounds finish in order."""
    kinds = [e.kind for e in events]
    assert kinds[0] == "task_started" and kinds[-1] == "task_finished"
    finished = [e.round for e in events if e.kind == "round_finished"]
    assert finished == list(range(rounds))
    benchmarked = [e.node.id for e in events if e.kind == "node_benchmarked"]
    assert benchmarked == list(range(rounds))
    for round_ in range(rounds):
        mine = [(i, e) for i, e in enumerate(events) if getattr(e, "round", None) == round_]
        order = [e.kind for _, e in mine]
        if round_ > 0:
            assert order[0] == "node_selected", order
        assert order[-1] == "round_finished" and order[-2] in ("node_benchmarked", "best_improved")
        calls = [k for k in order if k.startswith("llm_call")]
        assert calls == ["llm_call_started", "llm_call_finished"] * (len(calls) // 2), order


def union(spans: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one span."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def max_overlap(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    best = current = 0
    for _, step in edges:
        current += step
        best = max(best, current)
    return best


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_parallel_calls_overlap_and_the_run_stays_consistent(
    fake_openai: Any,
    tiny_reference: Path,
    tmp_path: Path,
    clean_agent_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    script = ParentScript()
    server = fake_openai(script)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-parallel-0123456789")
    out = tmp_path / "runs"
    code = main(
        optimize_args(
            tiny_reference, out, server.base_url, "--rounds", str(ROUNDS), "--parallel", "3"
        )
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    events = [event_from_dict(json.loads(line)) for line in captured.out.splitlines() if line]
    task_dir = Path(next(e for e in events if e.kind == "task_started").task_dir)
    state = json.loads((task_dir / "tree.json").read_text())
    assert state["finished"] and state["in_flight"] == [] and state["config"]["parallel"] == 3

    # --- overlap: calls answered side by side (the server's own clock), and with benchmarks
    chats = server.chat_requests
    calls = len(script.calls)
    assert len(chats) == calls == 1 + 2 * (ROUNDS - 1) - script.calls.count("debug")
    spans = script.spans
    assert max_overlap(spans) >= 2, "no two agent calls were in flight at once"
    assert union(spans) < 0.8 * sum(end - start for start, end in spans), "one after another"
    verifies = [r for r in trace_index(task_dir) if r["action"] == "VERIFY"]
    results = {
        r["node_id"]: json.loads(
            (task_dir / "evaluation" / f"node_{r['node_id']:04d}.json").read_text()
        )["result"]
        for r in verifies
    }
    benches = [(r["ts"] - results[r["node_id"]]["total_s"], r["ts"]) for r in verifies]
    assert any(max_overlap([bench, chat]) == 2 for bench in benches for chat in spans), (
        "no benchmark ran while an agent call was in flight"
    )

    # --- the tree and its files
    shape = tree_shape(task_dir)
    assert [n for n, *_ in shape] == list(range(ROUNDS))
    assert all(parent is None or parent < node for node, parent, *_ in shape)
    nodes = state["tree"]["nodes"]
    assert [n["created_round"] for n in nodes] == list(range(ROUNDS))
    assert sorted(p.name for p in (task_dir / "evaluation").glob("node_*.json")) == [
        f"node_{i:04d}.json" for i in range(ROUNDS)
    ]
    reused = [n for n in nodes if n["reused_from"] is not None]
    assert all(n["reused_from"] < n["node_id"] for n in reused)
    assert len(verifies) + len(reused) == ROUNDS  # each node benchmarked once, or a twin's

    # --- one usage row and one llm_io pair per call, each call's round right
    with (task_dir / "usage.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == calls and all(r["ok"] == "1" for r in rows)
    per_round = {r: [row["role"] for row in rows if int(row["round"]) == r] for r in range(ROUNDS)}
    assert per_round[0] == ["seed"]
    phase = {n["node_id"]: n["phase"] for n in nodes}
    for round_ in range(1, ROUNDS):
        expected = ["plan", "code"] if phase[round_] == "optimize" else ["debug"]
        assert per_round[round_] == expected, (round_, per_round[round_])
    prompts = sorted((task_dir / "evaluation" / "llm_io").glob("*_prompt.md"))
    assert [int(p.name[:5]) for p in prompts] == list(range(1, calls + 1))

    check_trace(trace_index(task_dir))
    check_events(events, ROUNDS)
