"""The reference's forward time handed to later evaluations (`EvalConfig.reference_call_s`)
comes only from a trusted verdict, preferably the seed's, is never raised by a candidate,
and a resume re-derives it from the tree instead of trusting the saved figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.bench.result import EvalResult, TimingStats
from engine.search import StarkSearch
from engine.search.benchmarking import (
    UNTRUSTED_REFERENCE_FLAGS,
    NodeBenchmarker,
    trusted_reference_call_s,
)
from engine.search.tree import StarkNode, StarkTree
from tests.search.conftest import TINY_REFERENCE
from tests.search.test_search_fixes import ScriptedAgent, ScriptedBenchmarker, make_search

KERNEL = TINY_REFERENCE.replace("class Model(", "class ModelNew(").replace(
    "torch.relu(x)", "torch.clamp_min(x, 0.0)"
)


def verdict(ref_ms: float, flags: list[str] | None = None, correct: bool = True) -> EvalResult:
    return EvalResult(
        compiled=True,
        correct=correct,
        speedup=1.0,
        ref_ms=TimingStats(median=ref_ms, iqr=0.0, mean=ref_ms, min=ref_ms, n=30),
        new_ms=TimingStats(median=ref_ms, iqr=0.0, mean=ref_ms, min=ref_ms, n=30),
        flags=list(flags or []),
    )


@pytest.mark.parametrize("flag", sorted(UNTRUSTED_REFERENCE_FLAGS))
def test_a_flagged_or_wrong_verdict_cannot_vouch_for_the_reference(flag: str) -> None:
    assert trusted_reference_call_s(verdict(4.0)) == pytest.approx(0.004)
    assert trusted_reference_call_s(verdict(4.0, [flag])) is None
    assert trusted_reference_call_s(verdict(4.0, correct=False)) is None


def test_a_noisy_seed_is_skipped_and_a_clean_candidate_fills_in(tmp_path: Path) -> None:
    """Old code kept the first verdict's ref_ms (the noisy seed's 50 ms) for the run."""
    assert KERNEL != TINY_REFERENCE
    bench = ScriptedBenchmarker(verdict(50.0, ["noisy"]), verdict(2.0), verdict(900.0))
    search, _ = make_search(tmp_path / "task", ScriptedAgent(KERNEL), bench, rounds=2)
    search.run()
    assert search.reference_call_s == pytest.approx(0.002)


def test_a_resume_re_derives_the_reference_time_from_the_tree(tmp_path: Path) -> None:
    bench = ScriptedBenchmarker(verdict(3.0), verdict(2.0))
    search, _ = make_search(tmp_path / "task", ScriptedAgent(KERNEL), bench, rounds=2)
    search.run()
    state_path = tmp_path / "task" / "tree.json"
    state = json.loads(state_path.read_text())
    assert state["reference_call_s"] == pytest.approx(0.003)  # the seed's, not raised/lowered
    state["reference_call_s"] = 99.0  # what older code may have saved from a forged verdict
    state["finished"] = False
    state_path.write_text(json.dumps(state))
    resumed = StarkSearch.resume(
        search.task, agent=ScriptedAgent(KERNEL), benchmarker=bench, rounds=2
    )
    assert resumed.reference_call_s == pytest.approx(0.003)


def test_a_copy_of_the_reference_replaces_a_candidates_time_but_not_the_reverse() -> None:
    tree = StarkTree()
    search_bench = NodeBenchmarker(
        None, task=None, trace=None, tree=tree, config=None, reference_src=TINY_REFERENCE
    )
    candidate = StarkNode(node_id=0, parent_id=None, code=KERNEL, phase="optimize")
    assert search_bench.learn_reference_time(candidate, verdict(2.0))
    assert not search_bench.learn_reference_time(candidate, verdict(900.0))  # never raised
    copy_code = TINY_REFERENCE.replace("class Model(", "class ModelNew(")
    copy = StarkNode(node_id=1, parent_id=None, code=copy_code, phase="debug")
    assert search_bench.learn_reference_time(copy, verdict(3.0))
    assert search_bench.reference_call_s == pytest.approx(0.003)
    assert not search_bench.learn_reference_time(candidate, verdict(1.0))
    assert not search_bench.learn_reference_time(copy, verdict(5.0))  # set once
    assert search_bench.reference_call_s == pytest.approx(0.003)
