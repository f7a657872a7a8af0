"""The figures a task reports: the best kernel re-measured fresh (vs eager and vs
torch.compile, both sides' median and IQR), never a copy of the reference; the measured
reference time handed on; re-emitted failing code not debugged forever; agent calls told
apart from model calls. In process: a scripted agent and benchmarker (tests/search)."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import pytest

from engine.agents.base import AgentReply, AgentRequest, Role
from engine.artifacts.events import Event, LLMCallFinished, NodeBenchmarked, TaskFinished
from engine.artifacts.remeasured import Comparison, Remeasured, beyond_iqr
from engine.artifacts.summary import TaskSummary
from engine.artifacts.taskdir import USAGE_FIELDS, TaskDir
from engine.bench import Benchmarker, EvalConfig, EvalResult
from engine.cli import main
from engine.search import SearchConfig, StarkSearch
from engine.search.remeasure import remeasure
from tests.search.conftest import QUICK, TINY_REFERENCE
from tests.search.test_e2e_scripted import ANCHORED, PLAN, SEED, fenced
from tests.search.test_search_fixes import correct

COPY = TINY_REFERENCE + "\n\nclass ModelNew(Model):\n    pass\n"
BROKEN = SEED.replace("return y * 2.0 + 1.0", "return y.mul_(2.0)")


class Agent:
    """Seed and code replies from a table (debug answers like code)."""

    def __init__(self, seed: str, code: str) -> None:
        self.seed, self.code = seed, code

    def model_for(self, role: Role) -> str:
        return "scripted"

    def complete(self, request: AgentRequest) -> AgentReply:
        if request.role is Role.SEED:
            return AgentReply(text=fenced("python", self.seed), model="scripted")
        if request.role is Role.PLAN:
            return AgentReply(
                text=f"{fenced('json', json.dumps(PLAN))}\n{fenced('python', ANCHORED)}",
                model="scripted",
            )
        return AgentReply(text=fenced("python", self.code), model="scripted")


class Bench:
    """Verdicts by call order (the last repeats); remembers every call's arguments."""

    def __init__(self, *verdicts: EvalResult) -> None:
        self.verdicts = list(verdicts)
        self.calls: list[tuple[str, str, EvalConfig]] = []

    def evaluate(self, reference: str, candidate: str, config: EvalConfig) -> EvalResult:
        self.calls.append((reference, candidate, config))
        index = min(len(self.calls), len(self.verdicts)) - 1
        return EvalResult.from_dict(self.verdicts[index].to_dict())


def search_for(
    root: Path, agent: Any, bench: Any, rounds: int, *, compile_baseline: bool = True, **kw: Any
) -> tuple[StarkSearch, list[Event]]:
    events: list[Event] = []
    search = StarkSearch(
        task=TaskDir(root, "tiny_relu"),
        reference_src=TINY_REFERENCE,
        reference_path=str(root.parent / "tiny_relu.py"),
        agent=agent,
        agent_kind=kw.pop("agent_kind", "scripted"),
        agent_public={},
        config=SearchConfig(
            rounds=rounds,
            epsilon=0.0,
            compile_baseline=compile_baseline,
            eval_config=EvalConfig(profile=True),
        ),
        benchmarker=bench,
        events=events.append,
        device="cpu",
        **kw,
    )
    return search, events


def fail() -> EvalResult:
    return EvalResult(compiled=True, correct=False, stage="correctness", error="mismatch")


def test_comparison_from_a_verdict_and_its_text() -> None:
    verdict = correct(1.25, iqr=0.3)  # ref 10±0.3 ms, kernel 8±0.3 ms
    fresh = Comparison.from_result(verdict)
    assert fresh.speedup == 1.25 and fresh.baseline_ms.median == 10.0
    assert fresh.beyond_iqr and not fresh.noisy
    assert fresh.text("eager") == "1.25x vs eager (ref 10±0.3 ms → 8±0.3 ms)"
    close = Comparison.from_result(correct(1.02, iqr=1.0, flags=["noisy"]))
    assert not close.beyond_iqr and close.noisy
    assert close.text("eager").endswith(", within IQR, noisy)")
    assert beyond_iqr(10.0, 1.0, 9.0, 0.9) and not beyond_iqr(10.0, 1.0, 9.0, 1.2)
    with pytest.raises(ValueError, match="correctness: mismatch"):
        Comparison.from_result(fail())
    data = json.loads(json.dumps(Remeasured(vs_eager=fresh).to_dict()))
    assert data == {
        "vs_eager": {
            "speedup": 1.25,
            "baseline_ms": {"median": 10.0, "iqr": 0.3},
            "candidate_ms": {"median": 8.0, "iqr": 0.3},
            "beyond_iqr": True,
            "noisy": False,
        },
        "vs_compile": None,
        "error": None,
    }
    assert Remeasured.from_dict(data) == Remeasured(vs_eager=fresh)


def test_best_is_re_measured_and_the_copy_of_the_reference_never_counts(tmp_path: Path) -> None:
    """Seed: a copy of the reference measured 1.05x (noise). Round 1: a kernel the search
    measured 1.3x. Then two fresh evaluations: vs eager 1.1x, vs torch.compile 0.9x."""
    bench = Bench(correct(1.05), correct(1.3), correct(1.1, iqr=0.2), correct(0.9, iqr=0.4))
    search, events = search_for(tmp_path / "task", Agent(COPY, SEED), bench, rounds=2)
    summary = search.run()

    assert search.tree.nodes[0].baseline and not search.tree.nodes[1].baseline
    assert summary.baseline_nodes == 1 and summary.best_node == 1
    assert summary.search_best_speedup == 1.3  # the search's own (max of noisy) figure
    assert summary.best_speedup == 1.1  # the fresh one: what is reported and counted
    assert summary.remeasured is not None and summary.remeasured.vs_compile is not None
    assert summary.remeasured.vs_eager.baseline_ms.iqr == 0.2
    assert summary.remeasured.vs_compile.speedup == 0.9
    # the two fresh evaluations: eager reference, then the torch.compile'd one, no profile
    (eager_ref, eager_kernel, eager_cfg), (compiled_ref, compiled_kernel, _) = bench.calls[2:]
    assert eager_ref == TINY_REFERENCE and eager_kernel == SEED and not eager_cfg.profile
    assert "torch.compile(self.forward)" in compiled_ref and compiled_kernel == SEED
    # the reference's forward, timed by the seed's evaluation (10 ms), is handed on
    assert bench.calls[0][2].reference_call_s is None
    assert bench.calls[1][2].reference_call_s == pytest.approx(0.010)
    state = json.loads((tmp_path / "task" / "tree.json").read_text())
    assert state["reference_call_s"] == pytest.approx(0.010)
    assert state["tree"]["nodes"][0]["baseline"] is True
    # events: the snapshots carry the label; task_finished carries the new fields
    snapshots = [e.node for e in events if isinstance(e, NodeBenchmarked)]
    assert [s.baseline for s in snapshots] == [True, False]
    finished = [e for e in events if isinstance(e, TaskFinished)][0].summary
    assert finished["remeasured"]["vs_eager"]["candidate_ms"]["median"] == pytest.approx(10 / 1.1)
    assert TaskSummary.from_dict(json.loads(json.dumps(finished))) == summary


def test_only_a_copy_of_the_reference_means_no_kernel(tmp_path: Path) -> None:
    bench = Bench(correct(1.08))
    search, _ = search_for(tmp_path / "task", Agent(COPY, COPY), bench, rounds=2)
    summary = search.run()
    assert summary.baseline_nodes == 2 and summary.correct_nodes == 2
    assert summary.best_node is None and summary.best_speedup is None and not summary.correct
    assert not (tmp_path / "task" / "best_kernel.py").exists()
    assert len(bench.calls) == 1  # round 1's copy reused the verdict; nothing to re-measure


def test_a_failed_re_measurement_is_recorded_not_fatal(tmp_path: Path) -> None:
    bench = Bench(correct(1.4), fail())
    search, _ = search_for(
        tmp_path / "task", Agent(SEED, SEED), bench, rounds=1, compile_baseline=False
    )
    summary = search.run()
    assert summary.correct and summary.best_node == 0 and summary.search_best_speedup == 1.4
    assert summary.best_speedup is None  # no fresh figure: none is made up
    assert summary.remeasured.error == "vs eager: correctness: mismatch"
    assert summary.remeasured.vs_compile is None and len(bench.calls) == 2


def test_a_debug_agent_re_emitting_the_same_code_is_stopped(tmp_path: Path) -> None:
    """Every debug reply is the seed's failing code again: each reuses the verdict (no
    benchmark), and after max_reemits copies the search stops instead of looping."""
    bench = Bench(fail())
    search, _ = search_for(tmp_path / "task", Agent(BROKEN, BROKEN), bench, rounds=12)
    summary = search.run()
    assert len(bench.calls) == 1  # never re-timed
    copies = [n for n in search.tree.nodes.values() if n.reused_from == 0]
    assert len(copies) == search.config.max_reemits == 3
    assert summary.rounds_run == 1 + 3 < 12  # old code: all 12 rounds spent on copies
    log = (tmp_path / "task" / "search.log").read_text()
    assert "re-emitted verbatim 3 times" in log and "no longer debugged" in log


def test_offline_agent_calls_are_not_llm_calls(tmp_path: Path) -> None:
    class Offline(Agent):
        def complete(self, request: AgentRequest) -> AgentReply:
            reply = super().complete(request)
            reply.cost_usd = 0.0  # what the offline agent reports: no tokens, no cost
            reply.kind = "agent"
            return reply

    bench = Bench(correct(1.2))
    search, events = search_for(
        tmp_path / "task",
        Offline(SEED, SEED),
        bench,
        rounds=2,
        compile_baseline=False,
        agent_kind="offline",
        agent_fallback="no model endpoint configured",
    )
    summary = search.run()
    assert summary.llm_calls == 0 and summary.agent_calls == 3  # seed, plan, code
    assert summary.prompt_tokens is None and summary.completion_tokens is None  # none invented
    assert summary.agent_fallback == "no model endpoint configured"
    with (tmp_path / "task" / "usage.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["kind"] for r in rows] == ["agent"] * 3
    assert {r["prompt_tokens"] for r in rows} == {""}
    assert {e.call_kind for e in events if isinstance(e, LLMCallFinished)} == {"agent"}


def test_model_calls_stay_llm_calls_and_old_usage_files_are_upgraded(tmp_path: Path) -> None:
    root = tmp_path / "task"
    root.mkdir()
    old_header = [f for f in USAGE_FIELDS if f != "kind"]
    with (root / "usage.csv").open("w", newline="") as fh:  # written before `kind` existed
        csv.writer(fh).writerows([old_header, ["t", 0, "seed", "m", 10, 5, "0.1", "", 1, ""]])
    search, _ = search_for(root, Agent(SEED, SEED), Bench(correct(1.2)), 1, compile_baseline=False)
    summary = search.run()
    with (root / "usage.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(USAGE_FIELDS)
    assert [r["kind"] for r in rows] == ["", "llm"]
    assert summary.llm_calls == 2 and summary.agent_calls == 0 and summary.prompt_tokens == 10


def test_a_debug_refusal_is_recorded_not_benchmarked(tmp_path: Path) -> None:
    class Refuses(Agent):
        def complete(self, request: AgentRequest) -> AgentReply:
            if request.role is Role.DEBUG:
                return AgentReply(text="", model="scripted", refusal="no fix known")
            return super().complete(request)

    bench = Bench(fail())
    search, _ = search_for(tmp_path / "task", Refuses(BROKEN, BROKEN), bench, rounds=2)
    search.run()
    assert len(bench.calls) == 1
    assert search.tree.nodes[1].error == "debug agent could not fix: no fix known"


def test_auto_agent_says_it_fell_back_to_offline(
    clean_agent_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.cli.common import make_agent_setup

    setup = make_agent_setup("auto", 0)
    assert setup.kind == "offline" and setup.fallback and "no model endpoint" in setup.fallback
    assert "--agent auto" in capsys.readouterr().err
    assert make_agent_setup("offline", 0).fallback is None  # asked for: not a fallback


@pytest.mark.slow
def test_compile_baseline_on_a_tiny_task(tmp_path: Path, tiny_reference: Path) -> None:
    """The one test with the real torch.compile baseline (Inductor on CPU): the fresh
    evaluation against the compiled reference builds and gives both sides' figures."""
    kernel = SEED
    config = EvalConfig(device="cpu", timing_budget_s=0.2, correctness_trials=2)
    started = time.monotonic()
    with Benchmarker() as bench:
        measured = remeasure(bench, TINY_REFERENCE, kernel, config, compile_baseline=True)
    took = time.monotonic() - started
    assert measured.error is None, measured.error
    assert measured.vs_eager is not None and measured.vs_compile is not None
    assert measured.vs_compile.baseline_ms.median > 0 and measured.vs_compile.candidate_ms.iqr >= 0
    assert took < 300, f"the compile baseline took {took:.0f} s"


@pytest.mark.slow
def test_optimize_prints_the_re_measured_line(
    tmp_path: Path, tiny_reference: Path, capsys: pytest.CaptureFixture[str], clean_agent_env: None
) -> None:
    args = ["optimize", str(tiny_reference), "--agent", "auto", "--rounds", "2"]
    code = main([*args, "--device", "cpu", "--out", str(tmp_path / "runs"), *QUICK])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "--agent auto: no model endpoint configured" in captured.err
    line = captured.out.splitlines()[0]
    assert "vs eager (ref " in line and " ms → " in line and "±" in line, line
    assert "torch.compile" not in line  # --no-compile-baseline (in QUICK)
    assert "1 copy of the reference" in line and "0 LLM calls" in line


def test_resume_labels_copies_in_a_tree_saved_before_the_label(tmp_path: Path) -> None:
    """An old tree.json: no `baseline`, no `best_id`, the seed (a copy) was its best."""
    root = tmp_path / "task"
    bench = Bench(correct(1.05), correct(0.95))
    search, _ = search_for(root, Agent(COPY, SEED), bench, rounds=2)
    search.run()
    state = json.loads((root / "tree.json").read_text())
    for node in state["tree"]["nodes"]:
        del node["baseline"]
    del state["tree"]["best_id"]
    state["best_id"], state["finished"] = 0, False
    (root / "tree.json").write_text(json.dumps(state))
    (root / "summary.json").unlink()
    resumed = StarkSearch.resume(
        TaskDir(root, "tiny_relu"), agent=Agent(COPY, SEED), benchmarker=Bench(correct(0.97))
    )
    assert resumed.tree.nodes[0].baseline and resumed.best_id == 1
    assert resumed.run().best_node == 1
