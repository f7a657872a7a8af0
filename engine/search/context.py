"""History context for the agents, built from the tree as the seed design describes:

- plan: local history (the node's children, siblings and nephews) plus the global leaders;
- code: siblings and cousins of the new kernel, and leaders, around the anchored code and
  the plan;
- debug: siblings and leaders plus the tail of the failing node's error log.

Each builder returns the prompt text *and* the structured items (for the offline
agent). Context is cut to a character budget, most relevant first; the node's own
code never passes through here, so it is never truncated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.agents.base import HistoryItem
from engine.search.tree import StarkNode, StarkTree

DEFAULT_BUDGET_CHARS = 24_000
ERROR_TAIL_CHARS = 4_000
_PLAN_STEP_CHARS = 200
RECENT_FAILURES = 8  # failed nodes from other branches shown to the planner


@dataclass(slots=True)
class Context:
    text: str
    items: list[HistoryItem] = field(default_factory=list)
    omitted: int = 0  # entries dropped to fit the budget


def error_tail(node: StarkNode, limit: int = ERROR_TAIL_CHARS) -> str:
    """The last `limit` characters of the node's failure: its error line plus log tail."""
    parts = []
    if node.error:
        parts.append(f"error: {node.error}")
    if node.metrics and node.metrics.error and node.metrics.error != node.error:
        parts.append(f"benchmarker: {node.metrics.error}")
    log = node.logs or (node.metrics.log if node.metrics else "")
    if log:
        if len(log) > limit:
            log = f"[... {len(log) - limit} earlier characters cut ...]\n" + log[-limit:]
        parts.append(log)
    return "\n".join(parts) or "(no error output was captured)"


def history_item(node: StarkNode, *, with_code: bool = False) -> HistoryItem:
    plan = node.plan
    summary = ""
    if plan:
        steps = "; ".join(str(s) for s in plan.get("steps", []))
        summary = f"{plan.get('title', '')}: {steps}"[: _PLAN_STEP_CHARS * 3]
    return HistoryItem(
        node_id=node.node_id,
        phase=node.phase,
        runnable=node.runnable,
        speedup=node.speedup,
        plan_summary=summary,
        error=None if node.runnable else (node.error or "failed"),
        code=node.code if with_code else None,
    )


def _entry(label: str, node: StarkNode) -> str:
    lines = [f"- [{label}] {node.header()}"]
    plan = node.plan
    if plan:
        for step in plan.get("steps", [])[:6]:
            lines.append(f"    * {str(step)[:_PLAN_STEP_CHARS]}")
    if node.metrics and node.metrics.flags:
        lines.append(f"    flags: {', '.join(node.metrics.flags)}")
    return "\n".join(lines)


def _code_entry(label: str, node: StarkNode) -> str:
    return f"### {label}: {node.header()}\n```python\n{node.code.rstrip()}\n```"


def _assemble(
    sections: list[tuple[str, list[tuple[str, StarkNode, bool]]]], budget: int
) -> Context:
    """Fill sections in priority order until the budget is spent; duplicates appear once."""
    seen: set[int] = set()
    out: list[str] = []
    items: list[HistoryItem] = []
    used = omitted = 0
    for title, entries in sections:
        body: list[str] = []
        for label, node, with_code in entries:
            if node.node_id in seen:
                body.append(f"- [{label}] node {node.node_id} (shown above)")
                continue
            text = _code_entry(label, node) if with_code else _entry(label, node)
            if with_code and used + len(text) > budget:  # fall back to the one-line form
                with_code, text = False, _entry(label, node)
            if used + len(text) + len(title) > budget:
                omitted += 1
                continue
            seen.add(node.node_id)
            body.append(text)
            # The structured item always carries the code (it costs no prompt budget): the
            # offline agent reads its header for what the node tried and what failed.
            items.append(history_item(node, with_code=True))
            used += len(text) + 1
        if body:
            out.append(f"{title}\n" + "\n".join(body))
            used += len(title) + 1
    if omitted:
        out.append(f"[... {omitted} more nodes omitted to fit the context budget ...]")
    return Context(text="\n\n".join(out) or "(no other attempts yet)", items=items, omitted=omitted)


def summaries_for_plan(
    tree: StarkTree, node: StarkNode, budget: int = DEFAULT_BUDGET_CHARS
) -> Context:
    """Local history (the node's children, siblings and nephews), the global leaders and
    the most recent failures elsewhere, so the planner neither repeats a tried idea (nor one
    that already failed on another branch) nor walks away from what works."""
    local = [("child", c, False) for c in tree.children_of(node)]
    local += [("sibling", s, False) for s in tree.siblings(node)]
    local += [("nephew", c, False) for c in tree.nephews(node)]
    leaders = [(f"leader #{i + 1}", n, False) for i, n in enumerate(tree.leaders())]
    near = {n.node_id for _, n, _ in local} | {node.node_id}
    failed = [n for n in reversed(tree.nodes.values()) if n.buggy and n.node_id not in near]
    elsewhere = [("failed", n, False) for n in failed[:RECENT_FAILURES]]
    return _assemble(
        [
            ("Earlier attempts from this node and its neighbours:", local),
            ("Best kernels so far (leaders):", leaders),
            ("Recent failures elsewhere in the tree:", elsewhere),
        ],
        budget,
    )


def context_for_code(
    tree: StarkTree, parent: StarkNode, budget: int = DEFAULT_BUDGET_CHARS
) -> Context:
    """For the coder of a new child of `parent`: its siblings-to-be (parent's children),
    its cousins-to-be (the parent's nephews), and the leaders; the best leader's code when
    it fits."""
    siblings = [("sibling", c, False) for c in tree.children_of(parent)]
    cousins = [("cousin", n, False) for n in tree.nephews(parent)]
    leaders = tree.leaders()
    leader_entries = [
        (f"leader #{i + 1}", n, i == 0 and n.node_id != parent.node_id)
        for i, n in enumerate(leaders)
    ]
    return _assemble(
        [
            ("Best kernels so far (leaders):", leader_entries),
            ("Other attempts from the same parent:", siblings),
            ("Attempts from neighbouring branches:", cousins),
        ],
        budget,
    )


def context_for_debug(
    tree: StarkTree, node: StarkNode, budget: int = DEFAULT_BUDGET_CHARS
) -> Context:
    """For the debugger of a failing node: how its siblings fared (what already failed
    or worked from the same parent) and the leaders; the error tail goes beside it."""
    siblings = [("sibling", s, False) for s in tree.siblings(node)]
    siblings += [("earlier fix attempt", c, False) for c in tree.children_of(node)]
    leaders = [(f"leader #{i + 1}", n, False) for i, n in enumerate(tree.leaders())]
    return _assemble(
        [
            ("Neighbouring attempts:", siblings),
            ("Best kernels so far (leaders):", leaders),
        ],
        budget,
    )
