"""Which node is the best kernel (tree level, hand-built verdicts): never a copy of the
reference, never a noisy verdict on a margin inside its own noise; and a failed code that
the debug agent keeps re-emitting stops being debugged."""

from __future__ import annotations

import json

import pytest

from engine.bench.result import EvalResult, TimingStats
from engine.search.tree import StarkNode, StarkTree, noise_discounted_score, relative_iqr


def timed(speedup: float, iqr_fraction: float = 0.01, noisy: bool = False) -> EvalResult:
    """Reference 10 ms; each side's IQR is `iqr_fraction` of its median."""
    new = 10.0 / speedup
    return EvalResult(
        compiled=True,
        correct=True,
        speedup=speedup,
        ref_ms=TimingStats(median=10.0, iqr=10.0 * iqr_fraction, mean=10.0, min=10.0, n=30),
        new_ms=TimingStats(median=new, iqr=new * iqr_fraction, mean=new, min=new, n=30),
        flags=["noisy"] if noisy else [],
    )


def failed() -> EvalResult:
    return EvalResult(compiled=True, correct=False, error="mismatch", stage="correctness")


def add(
    tree: StarkTree,
    parent: int | None,
    result: EvalResult,
    *,
    baseline: bool = False,
    reused_from: int | None = None,
) -> StarkNode:
    node = StarkNode(
        node_id=tree.new_id(),
        parent_id=parent,
        code=f"# node {tree.new_id()}",
        metrics=result,
        phase="seed" if parent is None else "optimize",
        baseline=baseline,
        reused_from=reused_from,
    )
    return tree.add_node(node)


def test_a_baseline_node_is_never_best_but_may_be_expanded() -> None:
    tree = StarkTree(epsilon=0.0)
    add(tree, None, timed(1.04), baseline=True)  # the offline seed: the reference itself
    assert tree.best() is None  # old code: the copy was "the best kernel" at 1.04x
    assert tree.select_node().node.node_id == 0  # still the node the search works from
    add(tree, 0, timed(0.9))
    assert tree.best().node_id == 1  # slower than the copy, yet the only real kernel
    add(tree, 0, timed(5.0), baseline=True)  # a re-emitted copy measured "5x" by noise
    assert tree.best().node_id == 1


def test_relative_iqr_adds_both_sides() -> None:
    assert relative_iqr(timed(2.0, iqr_fraction=0.08)) == pytest.approx(0.16)
    assert relative_iqr(None) == 0.0


def test_a_noisy_verdict_does_not_win_on_a_margin_inside_its_noise() -> None:
    tree = StarkTree()
    add(tree, None, timed(1.50))
    add(tree, 0, timed(1.60, iqr_fraction=0.08, noisy=True))  # +6.7% < 16% of noise
    assert tree.best().node_id == 0
    add(tree, 0, timed(1.80, iqr_fraction=0.08, noisy=True))  # +20% > 16%: a real win
    assert tree.best().node_id == 2
    add(tree, 0, timed(1.85, iqr_fraction=0.08))  # not noisy: any higher score wins
    assert tree.best().node_id == 3
    # the noisy node still leads selection by its score: only "best" is guarded
    assert tree.leader_ids[0] == 3 and 1 in tree.leader_ids


def test_best_survives_a_round_trip_and_is_rebuilt_for_old_trees() -> None:
    tree = StarkTree()
    add(tree, None, timed(1.02), baseline=True)
    add(tree, 0, timed(1.3))
    add(tree, 0, timed(1.35, iqr_fraction=0.1, noisy=True))
    data = json.loads(json.dumps(tree.to_dict()))
    assert data["nodes"][0]["baseline"] is True
    assert StarkTree.from_dict(data).best().node_id == 1
    del data["best_id"]  # a tree.json written before the best was tracked
    assert StarkTree.from_dict(data).best().node_id == 1


def test_a_code_re_emitted_too_often_is_no_longer_debugged() -> None:
    tree = StarkTree(epsilon=0.0, max_reemits=2)
    add(tree, None, failed())
    add(tree, 0, failed(), reused_from=0)
    assert {n.node_id for n in tree.pool()} == {0, 1}
    add(tree, 0, failed(), reused_from=0)
    assert tree.reemits() == {0: 2}
    assert tree.given_up() == {0, 1, 2}
    assert tree.pool() == [] and tree.select_node() is None


def test_a_noisy_first_node_does_not_stick_and_order_does_not_matter() -> None:
    """A noisy 1.30x (60% IQR a side) measured first used to be crowned with no margin and
    kept against a clean 1.25x measured later; the other order gave the clean one."""
    bests = []
    for order in (("noisy", "clean"), ("clean", "noisy")):
        tree = StarkTree()
        add(tree, None, timed(1.0), baseline=True)
        ids = {}
        for kind in order:
            result = timed(1.30, 0.6, noisy=True) if kind == "noisy" else timed(1.25)
            ids[kind] = add(tree, 0, result).node_id
        bests.append(tree.best().node_id == ids["clean"])
        tree.recompute_best()
        bests.append(tree.best().node_id == ids["clean"])
    assert bests == [True, True, True, True]


def test_noise_discounted_score_ties_go_to_the_older_node() -> None:
    tree = StarkTree()
    add(tree, None, timed(1.2))
    add(tree, 0, timed(1.2))
    assert tree.best().node_id == 0
    tree.recompute_best()
    assert tree.best().node_id == 0
    noisy = timed(2.0, iqr_fraction=0.1, noisy=True)
    assert noise_discounted_score(noisy) == pytest.approx(2.0 / 1.2)
    assert noise_discounted_score(timed(2.0, iqr_fraction=0.1)) == pytest.approx(2.0)
    assert noise_discounted_score(failed()) == 0.0
