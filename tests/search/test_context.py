"""Context builders: the right neighbours, and a budget that never cuts the node's code."""

from __future__ import annotations

import json

from engine.agents import prompts
from engine.bench.result import EvalResult
from engine.search.context import (
    context_for_code,
    context_for_debug,
    error_tail,
    summaries_for_plan,
)
from engine.search.tree import StarkNode, StarkTree


def build_tree() -> StarkTree:
    tree = StarkTree(root_limit=10)
    for parent, speedup in [(None, 1.0), (0, 2.0), (0, None), (1, 3.0), (2, 1.1), (1, None)]:
        result = (
            EvalResult(compiled=True, correct=True, speedup=speedup)
            if speedup
            else EvalResult(compiled=False, error="boom", stage="compile", log="line\n" * 3000)
        )
        node = StarkNode(
            node_id=tree.new_id(),
            parent_id=parent,
            code=f"class ModelNew:  # {tree.new_id()}\n" + "    pass\n" * 50,
            metrics=result,
            phase="seed" if parent is None else "optimize",
            plan_json=json.dumps(
                {"title": f"idea {tree.new_id()}", "steps": ["s"], "rationale": ""}
            ),
        )
        node.error = result.error
        tree.add_node(node)
    return tree


def test_plan_summaries_show_children_nephews_and_leaders() -> None:
    tree = build_tree()
    context = summaries_for_plan(tree, tree.nodes[1])
    ids = [item.node_id for item in context.items]
    assert ids[:2] == [3, 5]  # children of node 1
    assert 4 in ids  # nephew (child of sibling node 2)
    assert "leader #1" in context.text and "idea 3" in context.text


def test_code_context_includes_best_leader_code_and_cousins() -> None:
    tree = build_tree()
    context = context_for_code(tree, tree.nodes[1])
    assert "```python" in context.text  # the best leader's code (node 3, not the parent)
    assert {3, 5, 4} <= {item.node_id for item in context.items}


def test_debug_context_and_error_tail() -> None:
    tree = build_tree()
    context = context_for_debug(tree, tree.nodes[5])
    assert 3 in [i.node_id for i in context.items]  # sibling
    tail = error_tail(tree.nodes[5], limit=100)
    assert tail.startswith("error: boom") and "earlier characters cut" in tail
    assert len(tail) < 300


def test_budget_truncates_context_never_the_node_code() -> None:
    tree = build_tree()
    small = context_for_code(tree, tree.nodes[1], budget=300)
    assert small.omitted > 0 and "omitted to fit the context budget" in small.text
    target = prompts.Target("cpu", "test cpu", 2, False)
    parent = tree.nodes[1]
    prompt = prompts.build_plan_prompt("ref", target, parent.header(), parent.code, "-", small.text)
    assert parent.code.rstrip() in prompt
    assert "CPU only" in prompt and "IMPROVE BEGINS" in prompt
