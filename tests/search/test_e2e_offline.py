"""The embedded offline agent end to end (real benchmarker), and determinism: the same
seed with the same verdicts gives the same tree, ids, parents, phases and code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.agents.offline import OfflineAgent
from engine.artifacts.summary import TaskSummary
from engine.artifacts.taskdir import TaskDir
from engine.bench import Benchmarker, EvalConfig, EvalResult
from engine.search import SearchConfig, StarkSearch

ROUNDS = 4


class RecordingBenchmarker:
    """The real benchmarker, remembering each verdict by candidate source."""

    def __init__(self, inner: Benchmarker) -> None:
        self.inner = inner
        self.verdicts: dict[str, dict[str, Any]] = {}

    def evaluate(self, reference: str, candidate: str, config: EvalConfig) -> EvalResult:
        result = self.inner.evaluate(reference, candidate, config)
        # the search's verdict, not the fresh re-measurement of the best kernel after it
        self.verdicts.setdefault(candidate, result.to_dict())
        return result


class ReplayBenchmarker:
    """Replays recorded verdicts; an unseen candidate means the second run diverged."""

    def __init__(self, verdicts: dict[str, dict[str, Any]]) -> None:
        self.verdicts = verdicts

    def evaluate(self, reference: str, candidate: str, config: EvalConfig) -> EvalResult:
        assert candidate in self.verdicts, "the replayed search asked for a different kernel"
        return EvalResult.from_dict(self.verdicts[candidate])


def run_search(root: Path, reference: Path, benchmarker: Any) -> TaskSummary:
    config = SearchConfig(
        rounds=ROUNDS,
        seed=3,
        compile_baseline=False,
        eval_config=EvalConfig(
            device="cpu", timing_budget_s=0.2, correctness_trials=2, profile=True
        ),
    )
    search = StarkSearch(
        task=TaskDir(root, reference.stem),
        reference_src=reference.read_text(),
        reference_path=str(reference),
        agent=OfflineAgent(3),
        agent_kind="offline",
        agent_public={"offline_seed": 3},
        config=config,
        benchmarker=benchmarker,
        device="cpu",
    )
    return search.run()


def shape(root: Path) -> list[tuple[Any, ...]]:
    nodes = json.loads((root / "tree.json").read_text())["tree"]["nodes"]
    return [(n["node_id"], n["parent_id"], n["phase"], n["code"]) for n in nodes]


@pytest.mark.slow
def test_offline_agent_end_to_end_and_deterministic(
    tmp_path: Path, winnable_reference: Path
) -> None:
    with Benchmarker() as real:
        recorder = RecordingBenchmarker(real)
        summary = run_search(tmp_path / "first", winnable_reference, recorder)
    first = tmp_path / "first"
    assert summary.nodes == ROUNDS and summary.rounds_run == ROUNDS
    assert summary.correct and summary.best_speedup > 0
    # the offline agent is no model: its calls are agent_calls, with no token counts
    assert summary.llm_calls == 0 and summary.prompt_tokens is None
    assert summary.agent_calls >= 1 + 2 * (ROUNDS - 1) - summary.buggy_nodes
    assert summary.baseline_nodes >= 1  # its seed is the reference itself
    assert (first / "best_kernel.py").read_text().count("class ModelNew") == 1
    assert (first / "figures" / "score_curve.png").exists()
    assert TaskSummary.from_dict(json.loads((first / "summary.json").read_text())) == summary
    state = json.loads((first / "tree.json").read_text())
    assert state["finished"] and state["next_round"] == ROUNDS
    # every node's code is a real ModelNew module written to code/
    for node in state["tree"]["nodes"]:
        assert "ModelNew" in Path(node["code_path"]).read_text()
    # the plan prompt carries the benchmarker's profile of the selected node
    plans = sorted((first / "evaluation" / "llm_io").glob("*_plan_prompt.md"))
    assert state["tree"]["nodes"][0]["metrics"]["profile"], "the seed was profiled"
    assert plans and "self time (ms)" in plans[0].read_text()

    summary2 = run_search(
        tmp_path / "second", winnable_reference, ReplayBenchmarker(recorder.verdicts)
    )
    assert shape(tmp_path / "second") == shape(first)
    assert summary2.best_node == summary.best_node
