"""Regression tests for the search engine's review fixes, in process and fast: a scripted
agent and a scripted benchmarker stand in for the endpoint and the sandbox, so each test
pins one behaviour of `StarkSearch` itself.

- every event's text is redacted (node errors, verdict error/log, failures);
- the trace is told the run's known secrets (a key with no recognisable shape);
- a byte-identical candidate reuses the earlier verdict instead of a new benchmark;
- `--resume` of a finished run still emits task_finished, and prints per --json/--events.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.agents.base import AgentReply, AgentRequest, Role
from engine.artifacts.events import (
    Event,
    NodeBenchmarked,
    NodeSnapshot,
    RoundFinished,
    TaskFailed,
    TaskFinished,
)
from engine.artifacts.redact import Redactor
from engine.artifacts.taskdir import TaskDir
from engine.bench import EvalConfig, EvalResult
from engine.bench.result import TimingStats
from engine.cli import main
from engine.search import SearchConfig, SearchError, StarkSearch
from tests.search.conftest import TINY_REFERENCE
from tests.search.test_e2e_scripted import ANCHORED, PLAN, SEED, fenced

# Shapeless on purpose: no sk- prefix, no digits, no KEY-named variable holds it, so only
# the run's own list of secrets can find it.
PLAIN_KEY = "plain-local-credential-value"
HEX_KEY = "0f3c9a7be21d4c5e8a6b7c9d0e1f2a3b"  # an Azure-style key in a kernel's output


class ScriptedAgent:
    """Seed, plan and code replies from a table; every reply text may carry a secret."""

    def __init__(self, code_reply: str, echo: str = "") -> None:
        self.code_reply = code_reply
        self.echo = echo
        self.roles: list[Role] = []

    def model_for(self, role: Role) -> str:
        return "scripted"

    def complete(self, request: AgentRequest) -> AgentReply:
        self.roles.append(request.role)
        note = f"(echo {self.echo})\n" if self.echo else ""
        if request.role is Role.SEED:
            return AgentReply(text=note + fenced("python", SEED), model="scripted")
        if request.role is Role.PLAN:
            text = f"{note}{fenced('json', json.dumps(PLAN))}\n{fenced('python', ANCHORED)}"
            return AgentReply(text=text, model="scripted")
        return AgentReply(text=note + fenced("python", self.code_reply), model="scripted")


class ScriptedBenchmarker:
    """Verdicts by call order (the last one repeats); counts the candidates it saw."""

    def __init__(self, *verdicts: EvalResult) -> None:
        self.verdicts = list(verdicts)
        self.candidates: list[str] = []

    def evaluate(self, reference: str, candidate: str, config: EvalConfig) -> EvalResult:
        self.candidates.append(candidate)
        index = min(len(self.candidates), len(self.verdicts)) - 1
        return EvalResult.from_dict(self.verdicts[index].to_dict())


def timing(median: float, iqr: float = 0.0) -> TimingStats:
    return TimingStats(median=median, iqr=iqr, mean=median, min=median, n=30)


def correct(speedup: float, iqr: float = 0.0, flags: list[str] | None = None) -> EvalResult:
    """A correct verdict: reference 10 ms, candidate 10/speedup ms, each with this IQR."""
    return EvalResult(
        compiled=True,
        correct=True,
        speedup=speedup,
        stage=None,
        log="ok",
        ref_ms=timing(10.0, iqr),
        new_ms=timing(10.0 / speedup, iqr),
        flags=list(flags or []),
    )


def make_search(
    root: Path, agent: Any, benchmarker: Any, rounds: int, secrets: list[str] | None = None
) -> tuple[StarkSearch, list[Event]]:
    events: list[Event] = []
    reference = root.parent / "tiny_relu.py"
    reference.write_text(TINY_REFERENCE)
    search = StarkSearch(
        task=TaskDir(root, "tiny_relu", Redactor(list(secrets or []))),
        reference_src=TINY_REFERENCE,
        reference_path=str(reference),
        agent=agent,
        agent_kind="scripted",
        agent_public={},
        config=SearchConfig(
            rounds=rounds, seed=0, epsilon=0.0, compile_baseline=False, eval_config=EvalConfig()
        ),
        benchmarker=benchmarker,
        events=events.append,
        device="cpu",
    )
    return search, events


def all_text(root: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in root.rglob("*") if p.is_file())


def test_event_text_is_redacted(tmp_path: Path) -> None:
    failing = EvalResult(
        compiled=True,
        correct=False,
        stage="runtime",
        error=f"RuntimeError: auth failed for key={HEX_KEY} via {PLAIN_KEY}",
        log=f"worker: token: {HEX_KEY}\nusing {PLAIN_KEY}",
    )
    agent = ScriptedAgent(SEED.replace("2.0", "3.0"), echo=PLAIN_KEY)
    search, events = make_search(
        tmp_path / "task", agent, ScriptedBenchmarker(failing), rounds=2, secrets=[PLAIN_KEY]
    )
    search.run()
    benchmarked = [e for e in events if isinstance(e, NodeBenchmarked)]
    assert benchmarked and benchmarked[0].node.error
    stream = "\n".join(e.to_json() for e in events)
    for secret in (PLAIN_KEY, HEX_KEY):
        assert secret not in stream
    assert "[REDACTED]" in benchmarked[0].node.error
    assert "[REDACTED]" in benchmarked[0].result["log"]
    last_tree = [e for e in events if isinstance(e, RoundFinished)][-1].tree
    assert all(HEX_KEY not in (n.error or "") for n in last_tree)
    # paths and ids pass through unchanged
    assert benchmarked[0].node.code_path.endswith("node_0000.py")
    # ... and nothing on disk has either secret, the trace included (the trace cannot
    # guess PLAIN_KEY: it knows it because the search hands it the run's secrets)
    text = all_text(tmp_path / "task")
    assert PLAIN_KEY not in text and HEX_KEY not in text
    assert list((tmp_path / "task" / "trace").rglob("*DO_CODER_result.txt"))


def test_emit_redacts_whatever_it_is_given(tmp_path: Path) -> None:
    """emit itself is the last line of defence, whatever a caller forgot to redact."""
    search, events = make_search(
        tmp_path / "task", ScriptedAgent(SEED), ScriptedBenchmarker(), 1, secrets=[PLAIN_KEY]
    )
    path = str(tmp_path / "task" / "code" / "node_0000.py")
    snapshot = NodeSnapshot(
        id=0,
        parent=None,
        phase="seed",
        runnable=False,
        buggy=True,
        speedup=None,
        round=0,
        code_path=path,
        error=f"crash: key={HEX_KEY}",
    )
    result = {"error": f"{PLAIN_KEY} rejected", "log": f"token: {HEX_KEY}", "stage": "runtime"}
    search.emit(NodeBenchmarked(task_id="t", round=0, node=snapshot, result=result))
    search.emit(TaskFailed(task_id="t", error=f"boom {PLAIN_KEY} token={HEX_KEY}"))
    search.emit(TaskFinished(task_id="t", summary={"task_dir": path, "note": PLAIN_KEY}))
    sent = events[0]
    assert isinstance(sent, NodeBenchmarked)
    assert sent.node.error == "crash: key=[REDACTED]" and sent.node.code_path == path
    assert sent.result == {
        "error": "[REDACTED] rejected",
        "log": "token: [REDACTED]",
        "stage": "runtime",
    }
    assert result["log"] == f"token: {HEX_KEY}"  # the caller's objects are not mutated
    assert events[1].to_dict()["error"] == "boom [REDACTED] token=[REDACTED]"
    assert events[2].to_dict()["summary"] == {"task_dir": path, "note": "[REDACTED]"}


def test_task_failed_error_is_redacted(tmp_path: Path) -> None:
    harness = EvalResult(stage="harness", error=f"fork server died, env token={HEX_KEY}")
    search, events = make_search(
        tmp_path / "task", ScriptedAgent(SEED), ScriptedBenchmarker(harness), rounds=1
    )
    with pytest.raises(SearchError):
        search.run()
    failed = [e for e in events if isinstance(e, TaskFailed)]
    assert failed and HEX_KEY not in failed[0].error and "[REDACTED]" in failed[0].error


def test_identical_candidate_reuses_the_verdict(tmp_path: Path) -> None:
    """The code reply repeats the seed byte for byte: benchmarked once, verdict reused,
    and the older node stays the leader on the tie."""
    bench = ScriptedBenchmarker(correct(1.7), correct(9.9))
    search, events = make_search(tmp_path / "task", ScriptedAgent(SEED), bench, rounds=3)
    summary = search.run()
    # rounds 1 and 2 produced SEED again: never re-timed (the second call: the fresh
    # re-measurement of the best kernel after the search)
    assert bench.candidates == [SEED, SEED]
    nodes = search.tree.nodes
    assert len(nodes) == 3
    for node_id in (1, 2):
        twin = nodes[node_id]
        assert twin.reused_from == 0
        assert twin.logs.startswith("identical to node 0; verdict reused")
        assert twin.metrics is not None and twin.metrics.to_dict() == nodes[0].metrics.to_dict()
        assert twin.score == nodes[0].score == 1.7
    assert search.tree.leader_ids == [0, 1, 2]  # exact ties: older first
    assert summary.best_node == 0
    saved = json.loads((tmp_path / "task" / "evaluation" / "node_0001.json").read_text())
    assert saved["reused_from"] == 0 and saved["result"]["speedup"] == 1.7
    state = json.loads((tmp_path / "task" / "tree.json").read_text())
    assert state["tree"]["nodes"][1]["reused_from"] == 0
    reused = [e for e in events if isinstance(e, NodeBenchmarked)][1]
    assert reused.node.speedup == 1.7 and reused.trace_files == []
    conductor = list((tmp_path / "task" / "trace").rglob("*CheckCoder_result*.txt"))
    assert any('"duplicate_of": 0' in p.read_text() for p in conductor)


def test_different_candidate_is_benchmarked(tmp_path: Path) -> None:
    other = SEED.replace("y * 2.0 + 1.0", "y * 2.0 + 1.0  # same maths, other bytes")
    bench = ScriptedBenchmarker(correct(1.0), correct(1.2))
    search, _ = make_search(tmp_path / "task", ScriptedAgent(other), bench, rounds=2)
    search.run()
    assert bench.candidates == [SEED, other, other]  # the last: re-measuring the best
    assert search.tree.nodes[1].reused_from is None


def finished_task(tmp_path: Path) -> Path:
    root = tmp_path / "task"
    search, _ = make_search(root, ScriptedAgent(SEED), ScriptedBenchmarker(correct(1.5)), 1)
    search.run()
    return root


def test_resume_of_finished_run_emits_task_finished(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], clean_agent_env: None
) -> None:
    root = finished_task(tmp_path)
    assert main(["optimize", "--resume", str(root), "--events", "jsonl"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, lines  # the event only: no human summary mixed into the stream
    event = json.loads(lines[0])
    assert event["event"] == "task_finished" and event["summary"]["best_speedup"] == 1.5

    assert main(["optimize", "--resume", str(root), "--events", "jsonl", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(x).get("event") for x in lines] == ["task_finished", None]
    assert json.loads(lines[1])["task_dir"] == str(root.resolve())

    assert main(["optimize", "--resume", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["nodes"] == 1

    assert main(["optimize", "--resume", str(root)]) == 0
    assert "best 1.50x vs eager (ref 10±0 ms → 6.67±0 ms" in capsys.readouterr().out


def test_finished_search_run_emits_task_finished(tmp_path: Path) -> None:
    root = finished_task(tmp_path)
    events: list[Event] = []
    search = StarkSearch.resume(
        TaskDir(root, "tiny_relu"),
        agent=ScriptedAgent(SEED),
        benchmarker=ScriptedBenchmarker(correct(1.0)),
        events=events.append,
    )
    summary = search.run()
    assert [type(e) for e in events] == [TaskFinished]
    assert summary.best_speedup == 1.5


def test_key_from_a_custom_env_var_is_redacted_in_the_trace(
    tmp_path: Path, clean_agent_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stark.toml names the variable holding the key; no heuristic knows that name, so
    the trace only redacts the key because the search passes it the configured secrets."""
    from engine.cli.common import make_agent_setup

    (tmp_path / "stark.toml").write_text('[agent]\napi_key_env = "MY_LLM_CRED"\n')
    monkeypatch.setenv("MY_LLM_CRED", PLAIN_KEY)
    setup = make_agent_setup("openai", 0, base_url="http://127.0.0.1:9/v1", preflight=False)
    assert PLAIN_KEY in setup.secrets
    root = tmp_path / "task"
    events: list[Event] = []
    search = StarkSearch(
        task=TaskDir(root, "tiny_relu", Redactor(setup.secrets)),
        reference_src=TINY_REFERENCE,
        reference_path=str(tmp_path / "tiny_relu.py"),
        agent=ScriptedAgent(SEED, echo=PLAIN_KEY),
        agent_kind="openai",
        agent_public={},
        config=SearchConfig(rounds=1, compile_baseline=False, eval_config=EvalConfig()),
        benchmarker=ScriptedBenchmarker(correct(1.0)),
        events=events.append,
    )
    search.run()
    trace_files = [p for p in (root / "trace").rglob("*") if p.is_file()]
    assert any(p.name.endswith("DO_CODER_result.txt") for p in trace_files)
    for path in trace_files:
        assert PLAIN_KEY not in path.read_text(), path
