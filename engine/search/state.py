"""Committing a node and the search state in tree.json.

After every node the whole state (tree with RNG state, round counter, best) is replaced
atomically in tree.json, so a run killed at any point resumes at the first round that has
no node yet (and, in a parallel search, redoes the rounds it lists as in flight).
`record_selection` announces a round's selection, `commit_node` persists what a new node
changed, `commit_events` are what the search announces about it, and `read_state` loads a
saved state for a resume.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from engine.artifacts.events import (
    BestImproved,
    Event,
    NodeBenchmarked,
    NodeSelected,
    NodeSnapshot,
    RoundFinished,
)
from engine.artifacts.taskdir import TaskDir
from engine.search.config import SearchError
from engine.search.equivalence import is_behavioural_copy, is_reference_copy
from engine.search.node import StarkNode
from engine.search.trace_guard import SafeTrace
from engine.search.tree import Selection, StarkTree

STATE_SCHEMA = 1


def read_state(task: TaskDir) -> dict[str, Any]:
    """The saved state of a task to resume; SearchError when there is none or its schema
    is unknown."""
    state = task.load_state()
    if state is None:
        raise SearchError(f"{task.root} has no {task.state_path.name}: nothing to resume")
    if state.get("schema") != STATE_SCHEMA:
        raise SearchError(f"{task.state_path} has an unknown schema {state.get('schema')!r}")
    return state


def snapshot(node: StarkNode) -> NodeSnapshot:
    """The event stream's compact view of a node."""
    return NodeSnapshot(
        id=node.node_id,
        parent=node.parent_id,
        phase=node.phase,
        runnable=node.runnable,
        buggy=node.buggy,
        speedup=node.speedup,
        round=node.created_round,
        score=node.score,
        code_path=str(node.code_path) if node.code_path else "",
        error=node.error,
        baseline=node.baseline,
    )


def is_baseline(node: StarkNode, reference_src: str) -> bool:
    """The node's code is the reference (or equivalent by its AST), or it behaved as one
    (bit-identical outputs, speedup within noise of 1.0): never the best kernel."""
    if not node.code:
        return False
    return is_reference_copy(node.code, reference_src) or is_behavioural_copy(node.metrics)


def label_baselines(tree: StarkTree, reference_src: str) -> None:
    """Label copies of the reference in a loaded tree (one saved before the label
    existed has none) and re-derive the best node from the labels."""
    for node in tree.nodes.values():
        node.baseline = is_baseline(node, reference_src)
    tree.recompute_best()


def node_facts(node: StarkNode, round_: int) -> dict[str, Any]:
    """The node's facts stored next to its metrics in evaluation/node_NNNN.json."""
    return {
        "node_id": node.node_id,
        "parent_id": node.parent_id,
        "phase": node.phase,
        "round": round_,
        "score": node.score,
        "runnable": node.runnable,
        "error": node.error,
        "code_path": str(node.code_path) if node.code_path else None,
        "plan": node.plan,
        "reused_from": node.reused_from,
        "baseline": node.baseline,
    }


def commit_node(
    task: TaskDir,
    tree: StarkTree,
    trace: SafeTrace,
    node: StarkNode,
    round_: int,
    reference_src: str,
) -> bool:
    """Add the node to the tree and write its metrics (and best_kernel.py when it is the
    new best); True when it became the best. The caller saves tree.json afterwards."""
    node.created_round = round_
    node.baseline = is_baseline(node, reference_src)
    previous_best = tree.best_id
    tree.add_node(node)
    if node.baseline:
        task.log(f"node {node.node_id}: the reference itself (baseline), not a kernel")
    _note_reemits(task, tree, trace, node, round_)
    task.write_metrics(node.node_id, node.metrics, node_facts(node, round_))
    improved = tree.best_id != previous_best
    if improved:
        task.write_best(node.code)
    return improved


def _note_reemits(
    task: TaskDir, tree: StarkTree, trace: SafeTrace, node: StarkNode, round_: int
) -> None:
    """Say so, once, when a failed code has been re-emitted often enough that the tree
    stops debugging it (`StarkTree.given_up`)."""
    twin = node.reused_from
    if twin is None or not node.buggy:
        return
    if tree.reemits().get(twin) != tree.max_reemits:
        return
    reason = (
        f"node {twin}'s failing code was re-emitted verbatim {tree.max_reemits} times "
        f"(last by node {node.node_id}); it and its copies are no longer debugged"
    )
    task.log(f"round {round_}: {reason}")
    trace.insert_conductor_record(
        "AnalyzeError",
        reason,
        json.dumps({"gave_up": twin, "copies": tree.reemits()[twin]}, indent=2),
        node_id=node.node_id,
        round=round_,
    )


def record_selection(
    task: TaskDir,
    trace: SafeTrace,
    tree: StarkTree,
    selection: Selection,
    round_: int,
    emit: Callable[[Event], None],
) -> None:
    """Announce a selection (node_selected), then record why in the trace (SelectNode)
    and search.log."""
    node = selection.node
    emit(
        NodeSelected(
            task_id=task.task_id,
            round=round_,
            node_id=node.node_id,
            mode=selection.mode,
            action=selection.action,
        )
    )
    reason = {
        "round": round_,
        "node_id": node.node_id,
        "mode": selection.mode,
        "source": selection.source,
        "candidates": selection.candidates,
        "action": selection.action,
        "node": node.header(),
        "leaders": list(tree.leader_ids),
        "epsilon": tree.epsilon,
    }
    trace.insert_conductor_record(
        "SelectNode",
        selection.describe(),
        json.dumps(reason, indent=2),
        node_id=node.node_id,
        round=round_,
        mode=selection.mode,
    )
    task.log(f"round {round_}: {selection.describe()}")


def commit_events(
    task_id: str,
    tree: StarkTree,
    node: StarkNode,
    round_: int,
    rounds: int,
    *,
    improved: bool,
    trace_files: list[str],
) -> list[Event]:
    """What the search announces once a node is committed: node_benchmarked, then
    best_improved when it is the new best, then round_finished with the whole tree."""
    events: list[Event] = [
        NodeBenchmarked(
            task_id=task_id,
            round=round_,
            node=snapshot(node),
            result=node.metrics.to_dict() if node.metrics else {},
            trace_files=trace_files if node.metrics else [],
        )
    ]
    if improved:
        events.append(
            BestImproved(
                task_id=task_id,
                round=round_,
                node_id=node.node_id,
                speedup=node.score,
                code_path=str(node.code_path),
            )
        )
    best = tree.nodes[tree.best_id] if tree.best_id is not None else None
    events.append(
        RoundFinished(
            task_id=task_id,
            round=round_,
            rounds=rounds,
            best_speedup=best.score if best else None,
            nodes=len(tree.nodes),
            buggy=sum(1 for n in tree.nodes.values() if n.buggy),
            tree=[snapshot(n) for n in tree.nodes.values()],
        )
    )
    return events
