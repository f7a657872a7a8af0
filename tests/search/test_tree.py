"""Selection policy of StarkTree: throttle, pruning, explore/exploit, leaders, persistence."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from engine.bench.result import EvalResult
from engine.search.tree import StarkNode, StarkTree, score_of


def ok(speedup: float) -> EvalResult:
    return EvalResult(compiled=True, correct=True, speedup=speedup)


def bad() -> EvalResult:
    return EvalResult(compiled=True, correct=False, error="mismatch", stage="correctness")


def add(tree: StarkTree, parent: int | None, result: EvalResult | None, phase: str = "optimize"):
    node = StarkNode(
        node_id=tree.new_id(),
        parent_id=parent,
        code=f"# node {tree.new_id()}",
        metrics=result,
        phase="seed" if parent is None else phase,
    )
    return tree.add_node(node)


def test_score_is_speedup_only_when_correct() -> None:
    assert score_of(ok(2.5)) == 2.5
    assert score_of(bad()) == 0.0
    assert score_of(None) == 0.0
    assert score_of(EvalResult(compiled=True, correct=True, speedup=None)) == 0.0


def test_node_properties_and_header() -> None:
    tree = StarkTree()
    root = add(tree, None, ok(1.5))
    child = add(tree, 0, bad())
    child.error = "mismatch"
    assert root.runnable and not root.buggy and root.speedup == 1.5
    assert child.buggy and child.speedup is None
    assert "1.50x" in root.header() and "FAILED: mismatch" in child.header()
    with pytest.raises(ValueError):
        StarkNode(node_id=9, parent_id=None, code="", phase="bogus")


def test_ids_are_dense_and_parents_must_exist() -> None:
    tree = StarkTree()
    add(tree, None, ok(1.0))
    with pytest.raises(ValueError):
        tree.add_node(StarkNode(node_id=5, parent_id=0, code=""))
    with pytest.raises(ValueError):
        tree.add_node(StarkNode(node_id=1, parent_id=7, code=""))
    with pytest.raises(ValueError):
        tree.add_node(StarkNode(node_id=1, parent_id=None, code=""))


def test_root_throttle() -> None:
    tree = StarkTree(root_limit=2, epsilon=0.0)
    add(tree, None, ok(1.0))
    add(tree, 0, bad())
    assert tree.select_node().node.node_id == 0
    add(tree, 0, bad())
    # the root now has root_limit children: only the buggy children remain
    for _ in range(20):
        assert tree.select_node().node.node_id in (1, 2)


def test_pruning_after_n_failed_children() -> None:
    tree = StarkTree(n_child=2, epsilon=0.0, root_limit=10)
    add(tree, None, ok(1.0))
    add(tree, 0, ok(3.0))  # node 1, the leader
    add(tree, 1, bad())
    assert tree.select_node().node.node_id == 1
    add(tree, 1, bad())
    assert tree.is_pruned(tree.nodes[1])
    # exploit falls back to the next leader that passes the filter
    selection = tree.select_node()
    assert selection.node.node_id == 0 and selection.source == "leaders"
    # a successful child un-prunes nothing retroactively, but a mixed set is not pruned
    add(tree, 1, ok(0.5))
    assert not tree.is_pruned(tree.nodes[1])


def test_nothing_selectable_returns_none() -> None:
    tree = StarkTree(root_limit=1, n_child=1)
    assert tree.select_node() is None  # empty tree
    add(tree, None, bad())
    add(tree, 0, bad())  # root throttled; node 1 is a leaf, still selectable
    assert tree.select_node().node.node_id == 1
    add(tree, 1, bad())  # node 1 pruned (1 child, failed); node 2 is a leaf
    add(tree, 2, bad())
    add(tree, 3, bad())
    assert [n.node_id for n in tree.pool()] == [4]


def test_explore_exploit_frequencies_under_seed() -> None:
    tree = StarkTree(epsilon=0.35, seed=123, root_limit=10)
    add(tree, None, ok(1.0))
    add(tree, 0, ok(2.0))  # leader
    add(tree, 0, bad())  # buggy leaf
    add(tree, 1, ok(1.5))  # runnable leaf
    modes: Counter[str] = Counter()
    picks: Counter[int] = Counter()
    n = 4000
    for _ in range(n):
        selection = tree.select_node()
        modes[selection.mode] += 1
        picks[(selection.mode, selection.node.node_id)] += 1
    assert abs(modes["explore"] / n - 0.35) < 0.03
    # exploit always takes the best leader
    assert picks[("exploit", 1)] == modes["exploit"]
    # explore samples leaves only; runnable leaves weigh leaf_bias (2) vs 1 for buggy ones
    explore_picks = {k[1]: v for k, v in picks.items() if k[0] == "explore"}
    assert set(explore_picks) == {2, 3}
    assert 1.6 < explore_picks[3] / explore_picks[2] < 2.5


def test_seeded_rng_replays() -> None:
    def run(seed: int) -> list[tuple[str, int]]:
        tree = StarkTree(epsilon=0.5, seed=seed)
        add(tree, None, ok(1.0))
        add(tree, 0, ok(1.2))
        add(tree, 0, bad())
        return [(s.mode, s.node.node_id) for s in (tree.select_node() for _ in range(50))]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_leader_upkeep_topk_sorted() -> None:
    tree = StarkTree(leader_topk=3, root_limit=10)
    add(tree, None, ok(1.0))
    for speedup in (2.0, 0.5, 3.0, 1.5):
        add(tree, 0, ok(speedup))
    add(tree, 0, bad())
    assert tree.leader_ids == [3, 1, 4]  # 3.0, 2.0, 1.5
    assert tree.best().node_id == 3
    add(tree, 1, ok(3.0))  # a tie keeps the older node first
    assert tree.leader_ids == [3, 6, 1]


def test_exploit_pool_fallback_without_leaders() -> None:
    tree = StarkTree(epsilon=0.0)
    add(tree, None, bad())
    selection = tree.select_node()
    assert selection.mode == "exploit" and selection.source == "pool"
    assert selection.action == "debug"


def test_json_round_trip_keeps_rng_and_structure() -> None:
    tree = StarkTree(epsilon=0.4, seed=5, leaf_bias=3.0)
    add(tree, None, ok(1.0))
    add(tree, 0, bad())
    add(tree, 0, ok(2.0)).reused_from = 0  # a duplicate that reused node 0's verdict
    tree.select_node()
    data = json.loads(json.dumps(tree.to_dict()))
    clone = StarkTree.from_dict(data)
    assert clone.params() == tree.params()
    assert clone.leader_ids == tree.leader_ids
    assert [n.to_dict() for n in clone.nodes.values()] == [n.to_dict() for n in tree.nodes.values()]
    assert clone.nodes[2].reused_from == 0
    for _ in range(30):
        a, b = tree.select_node(), clone.select_node()
        assert (a.mode, a.node.node_id) == (b.mode, b.node.node_id)


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError):
        StarkTree(epsilon=1.5)
    with pytest.raises(ValueError):
        StarkTree(root_limit=0)
    with pytest.raises(ValueError):
        StarkTree(leaf_bias=0)


def test_nephews_are_the_children_of_siblings() -> None:
    tree = StarkTree()
    root = add(tree, None, ok(1.0))
    a = add(tree, root.node_id, ok(1.1))
    b = add(tree, root.node_id, ok(1.2))
    a_child = add(tree, a.node_id, ok(1.3))
    b_child = add(tree, b.node_id, ok(1.4))
    assert [n.node_id for n in tree.nephews(a)] == [b_child.node_id]
    assert [n.node_id for n in tree.nephews(b)] == [a_child.node_id]
    assert tree.nephews(root) == []  # the root has no siblings
    assert not hasattr(tree, "cousins")  # the old, misleading name is gone


def test_search_config_and_tree_share_one_set_of_defaults() -> None:
    from engine.search import config

    cfg, tree = config.SearchConfig(), StarkTree()
    assert (cfg.epsilon, cfg.root_limit, cfg.leader_topk, cfg.n_child) == (
        tree.epsilon,
        tree.root_limit,
        tree.leader_topk,
        tree.n_child,
    )
    assert (cfg.rounds, cfg.context_budget) == (config.ROUNDS, config.CONTEXT_BUDGET)
