"""Selection that knows about rounds in flight (`StarkTree.select_node(pending)`), the tree
as it was at a dispatch (`StarkTree.prefix`), the in-flight queue (`InFlight`) and the
duplicate rule across rounds in flight (`NodeBenchmarker`): fast, in process."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from engine.artifacts.taskdir import TaskDir
from engine.bench import EvalConfig, EvalResult
from engine.bench.result import TimingStats
from engine.search.benchmarking import NodeBenchmarker
from engine.search.config import SearchConfig
from engine.search.inflight import Dispatch, InFlight
from engine.search.trace_guard import open_trace
from engine.search.tree import StarkNode, StarkTree


def verdict(ok: bool, speedup: float = 1.5) -> EvalResult:
    if not ok:
        return EvalResult(compiled=True, correct=False, stage="correctness", error="mismatch")
    stats = TimingStats(median=1.0, iqr=0.0, mean=1.0, min=1.0, n=30)
    new = TimingStats(median=1.0 / speedup, iqr=0.0, mean=1.0 / speedup, min=1.0, n=30)
    return EvalResult(compiled=True, correct=True, speedup=speedup, ref_ms=stats, new_ms=new)


def add(tree: StarkTree, parent: int | None, ok: bool = True, speedup: float = 1.5) -> int:
    node = StarkNode(
        node_id=tree.new_id(),
        parent_id=parent,
        code=f"# node {tree.new_id()}",
        phase="seed" if parent is None else "optimize",
        metrics=verdict(ok, speedup),
    )
    return tree.add_node(node).node_id


def draws(tree: StarkTree, pending: dict[int, int] | None, n: int = 40) -> list[tuple[str, int]]:
    return [(s.mode, s.node.node_id) for s in (tree.select_node(pending) for _ in range(n))]


def test_nothing_pending_is_the_sequential_rule() -> None:
    trees = []
    for _ in range(2):
        tree = StarkTree(epsilon=0.5, seed=7)
        root = add(tree, None)
        add(tree, root, ok=False)
        add(tree, root, speedup=2.0)
        trees.append(tree)
    assert draws(trees[0], None) == draws(trees[1], {})
    assert trees[0].rng.getstate() == trees[1].rng.getstate()


def test_the_root_throttle_counts_children_in_flight() -> None:
    tree = StarkTree(root_limit=3, n_child=5, epsilon=0.0)
    root = add(tree, None)
    add(tree, root)
    assert tree.select_node({root: 1}).node.node_id == root
    assert root not in {n.node_id for n in tree.pool({root: 2})}  # 1 child + 2 in flight


def test_at_most_n_child_in_flight_per_node() -> None:
    tree = StarkTree(n_child=3, epsilon=0.0)
    root = add(tree, None)
    add(tree, root, speedup=3.0)  # a runnable child: never pruned
    assert tree.select_node({root: 2}) is not None
    pool = {n.node_id for n in tree.pool({root: 3})}
    assert root not in pool and pool == {1}


def test_a_node_that_would_be_pruned_is_not_selected_again() -> None:
    """Two buggy children and one in flight: should that fail too, the node is pruned, so
    it gets no fourth child meanwhile (the sequential search could not give it one)."""
    tree = StarkTree(n_child=3, epsilon=0.0)
    root = add(tree, None)
    add(tree, root, ok=False)
    add(tree, root, ok=False)
    assert root in {n.node_id for n in tree.pool()}
    assert root not in {n.node_id for n in tree.pool({root: 1})}
    assert tree.is_pruned(tree.nodes[root], pending=1) and not tree.is_pruned(tree.nodes[root])


def test_a_node_with_a_child_in_flight_is_no_leaf() -> None:
    tree = StarkTree(epsilon=1.0, seed=3)
    root = add(tree, None)
    a = add(tree, root)
    b = add(tree, root)
    picked = {node for _, node in draws(tree, {a: 1}, 60)}
    assert picked == {b}
    assert tree.select_node({a: 1, b: 1}).source == "pool"  # no leaf left: the whole pool


def test_exploit_takes_the_best_leader_that_may_still_be_expanded() -> None:
    tree = StarkTree(epsilon=0.0, n_child=2)
    root = add(tree, None, speedup=1.0)
    best = add(tree, root, speedup=3.0)
    second = add(tree, root, speedup=2.0)
    assert tree.select_node().node.node_id == best
    selection = tree.select_node({best: 2})
    assert selection.node.node_id == second and selection.source == "leaders"


def test_prefix_is_the_tree_as_it_was() -> None:
    tree = StarkTree(leader_topk=2)
    snapshots = []
    for parent, ok, speedup in [(None, True, 1.0), (0, True, 2.0), (0, False, 0), (1, True, 3.0)]:
        snapshots.append(tree.to_dict())
        add(tree, parent, ok, speedup)
    for count, then in enumerate(snapshots):
        now = tree.prefix(count).to_dict()
        for data in (now, then):
            data.pop("rng_state")
        assert now == then


def test_dispatch_round_trip() -> None:
    dispatch = Dispatch(
        round=4, node_id=4, parent_id=1, mode="explore", source="leaves", candidates=[1], after=3
    )
    assert Dispatch.from_dict(dispatch.to_dict()) == dispatch


def test_rounds_come_back_oldest_first() -> None:
    flight = InFlight(2, next_round=1)
    release_first = threading.Event()
    seen: list[int] = []

    def work(node_id: int, gate: threading.Event | None) -> StarkNode:
        if gate is not None:
            assert gate.wait(10)
        seen.append(node_id)
        return StarkNode(node_id=node_id, parent_id=0, code="", phase="optimize")

    def dispatch(round_: int) -> Dispatch:
        return Dispatch(round_, round_, 0, "explore", "leaves", [0], 1)

    flight.submit(dispatch(1), lambda: work(1, release_first))
    flight.submit(dispatch(2), lambda: work(2, None))
    assert not flight.has_room() and flight.pending_children() == {0: 2}
    threading.Timer(0.3, release_first.set).start()
    first, node = flight.next_done()  # round 2 finished first; round 1 still comes first
    assert (first.round, node.node_id) == (1, 1) and seen == [2, 1]
    assert flight.next_done()[0].round == 2 and len(flight) == 0
    with pytest.raises(ValueError, match="expected 3"):
        flight.submit(dispatch(5), lambda: work(5, None))


def test_an_expansion_error_reaches_the_coordinator_in_round_order() -> None:
    flight = InFlight(1, next_round=1)
    caller = threading.current_thread()
    ran_on: list[threading.Thread] = []

    def boom() -> StarkNode:
        ran_on.append(threading.current_thread())
        raise RuntimeError("harness broken")

    flight.submit(Dispatch(1, 1, 0, "explore", "leaves", [0], 1), boom)
    assert ran_on == [caller]  # width 1: inline, as the sequential search always ran
    with pytest.raises(RuntimeError, match="harness broken"):
        flight.next_done()


class GatedBenchmarker:
    """Counts evaluations; each waits for `gate` (so a test decides who finishes first)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.evaluated: list[str] = []

    def evaluate(self, reference: str, candidate: str, config: EvalConfig) -> EvalResult:
        assert self.gate.wait(10)
        self.evaluated.append(candidate)
        return verdict(True)


def test_a_younger_twin_waits_for_the_older_ones_verdict(tmp_path: Path) -> None:
    """Node 2's code arrives before node 1's (same code): it waits, then reuses node 1's
    verdict, as the sequential search would have; one evaluation in all."""
    task = TaskDir(tmp_path / "task", "t")
    task.create("reference")
    tree = StarkTree()
    tree.add_node(StarkNode(node_id=0, parent_id=None, code="# seed", metrics=verdict(True)))
    bench_impl = GatedBenchmarker()
    bench = NodeBenchmarker(
        bench_impl,
        task=task,
        trace=open_trace("t", task),
        tree=tree,
        config=SearchConfig(eval_config=EvalConfig()),
        reference_src="reference",
    )
    bench.expect(1)
    bench.expect(2)
    code = "class ModelNew: pass\n"
    older = StarkNode(node_id=1, parent_id=0, code=code, phase="optimize")
    younger = StarkNode(node_id=2, parent_id=0, code=code, phase="optimize")
    done: dict[int, StarkNode] = {}
    second = threading.Thread(target=lambda: done.setdefault(2, bench.benchmark(younger, 2)))
    second.start()
    second.join(0.3)
    assert second.is_alive()  # waiting for node 1's code
    first = threading.Thread(target=lambda: done.setdefault(1, bench.benchmark(older, 1)))
    first.start()
    bench_impl.gate.set()
    first.join(10)
    second.join(10)
    assert bench_impl.evaluated == [code]
    assert done[2].reused_from == 1 and done[1].reused_from is None
    assert done[2].metrics is not None and done[2].metrics.correct
