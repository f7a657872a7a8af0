"""The STARK search tree: its nodes (`engine.search.node.StarkNode`, re-exported here),
the best kernel, and the epsilon-greedy selection policy that decides which node the next
round expands.

Everything the search needs to resume lives here and round-trips through JSON
(`StarkTree.to_dict` / `from_dict`), the RNG state included, so a resumed run makes
exactly the choices the killed one would have made.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from engine.search.node import (
    PHASES,
    Mode,
    Phase,
    StarkNode,
    noise_discounted_score,
    relative_iqr,
    score_of,
)

__all__ = [
    "EPSILON",
    "LEADER_TOPK",
    "LEAF_BIAS",
    "MAX_REEMITS",
    "N_CHILD",
    "PHASES",
    "ROOT_LIMIT",
    "Mode",
    "Phase",
    "Selection",
    "StarkNode",
    "StarkTree",
    "noise_discounted_score",
    "relative_iqr",
    "score_of",
]


# The selection policy's defaults (`SearchConfig` and the CLI take theirs from here).
EPSILON = 0.35  # probability of exploring instead of exploiting a leader
ROOT_LIMIT = 5  # children the root may have
LEAF_BIAS = 2.0  # weight of a runnable leaf against 1 for a buggy one when exploring
LEADER_TOPK = 5  # leaders kept for exploitation
N_CHILD = 3  # a node is pruned after this many children, all buggy
MAX_REEMITS = 3  # stop debugging a failed code once this many nodes re-emitted it verbatim


@dataclass(slots=True)
class Selection:
    """What `select_node` chose, and why (for events and the trace)."""

    node: StarkNode
    mode: Mode
    # explore: "leaves" or "pool"; exploit: "leaders" or "pool"
    source: str
    candidates: list[int]

    @property
    def action(self) -> str:
        return "optimize" if self.node.runnable else "debug"

    def describe(self) -> str:
        return (
            f"selected node {self.node.node_id} by {self.mode} from {self.source} "
            f"(candidates {self.candidates}); action {self.action}"
        )


class StarkTree:
    """The search tree and its selection policy.

    - root throttle: the root is no longer selectable once it has `root_limit` children;
    - pruning: a node with `n_child` or more children, all of them buggy, is skipped;
    - explore (probability `epsilon`): sample an expandable leaf, runnable leaves
      weighted `leaf_bias` against 1 for buggy ones; the whole pool when no leaf is left;
    - exploit: the best leader (top-`leader_topk` runnable nodes by score) that passes
      the filter, else the pool's best-scoring node;
    - give up: once `max_reemits` nodes have re-emitted a failed node's exact code (the
      debug agent keeps sending the same broken kernel), that code is not debugged again;
    - pending children (a parallel search's expansions still in flight, `pending`: parent id
      -> count) count as children: toward the root's `root_limit`; toward pruning (a node
      whose committed children are all buggy, or that has none, is skipped once committed
      plus pending children reach `n_child`, so it never gets more children than the
      sequential search could give it before being pruned); at most `n_child` in flight per
      node; and a node with a pending child is no leaf. With no pending children every rule
      is the sequential one.

    The best node (`best()`) is tracked apart from the leaders: never a baseline node
    (a copy of the reference); among the other correct nodes, the highest
    `noise_discounted_score` (speedup / (1 + relative IQR) for a noisy verdict), the
    older node on ties, so the best does not depend on the order nodes arrived in.
    """

    def __init__(
        self,
        *,
        epsilon: float = EPSILON,
        root_limit: int = ROOT_LIMIT,
        leaf_bias: float = LEAF_BIAS,
        leader_topk: int = LEADER_TOPK,
        n_child: int = N_CHILD,
        max_reemits: int = MAX_REEMITS,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be within [0, 1], not {epsilon}")
        if root_limit < 1 or leader_topk < 1 or n_child < 1 or max_reemits < 1:
            raise ValueError("root_limit, leader_topk, n_child and max_reemits must be >= 1")
        if leaf_bias <= 0:
            raise ValueError(f"leaf_bias must be positive, not {leaf_bias}")
        self.nodes: dict[int, StarkNode] = {}
        self.root_id: int | None = None
        self.next_id = 0
        self.epsilon = epsilon
        self.root_limit = root_limit
        self.leaf_bias = leaf_bias
        self.leader_topk = leader_topk
        self.n_child = n_child
        self.max_reemits = max_reemits
        self.leader_ids: list[int] = []
        self.best_id: int | None = None
        self.rng = random.Random(seed)

    # --- structure ---------------------------------------------------------------------------

    def new_id(self) -> int:
        """The id the next added node will get (ids are dense and never reused)."""
        return self.next_id

    def add_node(self, node: StarkNode) -> StarkNode:
        if node.node_id != self.next_id:
            raise ValueError(f"expected node id {self.next_id}, got {node.node_id}")
        if node.parent_id is None:
            if self.root_id is not None:
                raise ValueError("the tree already has a root")
            self.root_id = node.node_id
        elif node.parent_id not in self.nodes:
            raise ValueError(f"parent {node.parent_id} of node {node.node_id} does not exist")
        node.score = score_of(node.metrics)
        self.nodes[node.node_id] = node
        self.next_id += 1
        if node.parent_id is not None:
            self.nodes[node.parent_id].children.append(node.node_id)
        self._update_leaders(node)
        if self.beats_best(node):
            self.best_id = node.node_id
        return node

    @staticmethod
    def may_be_best(node: StarkNode) -> bool:
        """Runnable and not a copy of the reference."""
        return node.runnable and not node.baseline

    def beats_best(self, node: StarkNode) -> bool:
        """Whether `node` ranks above the current best: eligible (`may_be_best`) with a
        strictly higher noise-discounted score (a tie keeps the older node)."""
        if not self.may_be_best(node):
            return False
        if self.best_id is None:
            return True
        incumbent = self.nodes[self.best_id]
        return noise_discounted_score(node.metrics) > noise_discounted_score(incumbent.metrics)

    def _update_leaders(self, node: StarkNode) -> None:
        """Keep `leader_ids` as the top-k runnable nodes, best first (ties: older first)."""
        if not node.runnable:
            return
        ids = set(self.leader_ids) | {node.node_id}
        ranked = sorted(ids, key=lambda i: (-self.nodes[i].score, i))
        self.leader_ids = ranked[: self.leader_topk]

    @property
    def root(self) -> StarkNode | None:
        return None if self.root_id is None else self.nodes[self.root_id]

    def parent(self, node: StarkNode) -> StarkNode | None:
        return None if node.parent_id is None else self.nodes[node.parent_id]

    def children_of(self, node: StarkNode) -> list[StarkNode]:
        return [self.nodes[i] for i in node.children]

    def siblings(self, node: StarkNode) -> list[StarkNode]:
        parent = self.parent(node)
        if parent is None:
            return []
        return [self.nodes[i] for i in parent.children if i != node.node_id]

    def nephews(self, node: StarkNode) -> list[StarkNode]:
        """Children of the node's siblings (a new child of `node` would call them cousins)."""
        return [self.nodes[c] for s in self.siblings(node) for c in s.children]

    def leaders(self) -> list[StarkNode]:
        return [self.nodes[i] for i in self.leader_ids]

    def best(self) -> StarkNode | None:
        """The best kernel: the runnable non-baseline node with the highest
        noise-discounted score (oldest on ties)."""
        return None if self.best_id is None else self.nodes[self.best_id]

    def recompute_best(self) -> None:
        """Re-derive the best (after labels changed, or for a tree saved before the best
        was tracked): the argmax of the noise-discounted score, oldest on ties."""
        eligible = [n for n in self.nodes.values() if self.may_be_best(n)]
        if not eligible:
            self.best_id = None
            return
        best = max(eligible, key=lambda n: (noise_discounted_score(n.metrics), -n.node_id))
        self.best_id = best.node_id

    def reemits(self) -> dict[int, int]:
        """For each failed node whose exact code later nodes re-emitted: how many did."""
        counts: dict[int, int] = {}
        for node in self.nodes.values():
            if node.reused_from is not None and node.buggy:
                counts[node.reused_from] = counts.get(node.reused_from, 0) + 1
        return counts

    def given_up(self) -> set[int]:
        """Nodes no longer debugged: a failed code re-emitted `max_reemits` times, with
        every copy of it."""
        dead = {t for t, n in self.reemits().items() if n >= self.max_reemits}
        copies = {n.node_id for n in self.nodes.values() if n.reused_from in dead}
        return dead | copies

    # --- selection ---------------------------------------------------------------------------

    def is_pruned(self, node: StarkNode, pending: int = 0) -> bool:
        """`n_child` or more children, all buggy; with `pending` children in flight, the
        node would be pruned should they fail too."""
        kids = self.children_of(node)
        return len(kids) + pending >= self.n_child and all(k.buggy for k in kids)

    def _candidate_filter(
        self,
        node: StarkNode,
        given_up: set[int] | None = None,
        pending: Mapping[int, int] | None = None,
    ) -> bool:
        """Whether a node may be expanded now (its children in flight counted)."""
        in_flight = pending.get(node.node_id, 0) if pending else 0
        if node.node_id == self.root_id and len(node.children) + in_flight >= self.root_limit:
            return False
        if node.node_id in (self.given_up() if given_up is None else given_up):
            return False
        if in_flight >= self.n_child:
            return False
        return not self.is_pruned(node, in_flight)

    @staticmethod
    def _leaves(
        nodes: list[StarkNode], pending: Mapping[int, int] | None = None
    ) -> list[StarkNode]:
        return [n for n in nodes if not n.children and not (pending or {}).get(n.node_id)]

    def pool(self, pending: Mapping[int, int] | None = None) -> list[StarkNode]:
        given_up = self.given_up()
        return [n for n in self.nodes.values() if self._candidate_filter(n, given_up, pending)]

    def select_node(self, pending: Mapping[int, int] | None = None) -> Selection | None:
        """Choose the node to expand next; None when every node is throttled or pruned
        (counting `pending`: parent id -> children still in flight; see the class doc).

        The RNG is drawn from the same number of times whatever the tree looks like
        (one draw for the mode, one for an explore sample), so seeded runs replay."""
        pool = self.pool(pending)
        if not pool:
            return None
        if self.rng.random() < self.epsilon:
            leaves = self._leaves(pool, pending)
            source, choices = ("leaves", leaves) if leaves else ("pool", pool)
            weights = [self.leaf_bias if n.runnable else 1.0 for n in choices]
            node = self.rng.choices(choices, weights=weights, k=1)[0]
            return Selection(node, "explore", source, [n.node_id for n in choices])
        allowed = {n.node_id for n in pool}
        leaders = [n for n in self.leaders() if n.node_id in allowed]
        if leaders:
            return Selection(leaders[0], "exploit", "leaders", [n.node_id for n in leaders])
        best = max(pool, key=lambda n: (n.score, -n.node_id))
        return Selection(best, "exploit", "pool", [n.node_id for n in pool])

    def prefix(self, count: int) -> StarkTree:
        """The tree as it was when it held its first `count` nodes: ids are dense and nodes
        arrive in id order, so that is a prefix, with the leaders and best of then and
        children limited to it (a resumed parallel search rebuilds a dispatched round's
        context from it). Nodes are copies; the RNG is not part of it (a prefix never
        selects)."""
        view = StarkTree(**self.params())
        for node_id in range(count):
            view.add_node(replace(self.nodes[node_id], children=[]))
        return view

    # --- persistence -------------------------------------------------------------------------

    def params(self) -> dict[str, Any]:
        return {
            "epsilon": self.epsilon,
            "root_limit": self.root_limit,
            "leaf_bias": self.leaf_bias,
            "leader_topk": self.leader_topk,
            "n_child": self.n_child,
            "max_reemits": self.max_reemits,
        }

    def to_dict(self) -> dict[str, Any]:
        version, internal, gauss = self.rng.getstate()
        return {
            **self.params(),
            "root_id": self.root_id,
            "next_id": self.next_id,
            "leader_ids": list(self.leader_ids),
            "best_id": self.best_id,
            "rng_state": [version, list(internal), gauss],
            "nodes": [self.nodes[i].to_dict() for i in sorted(self.nodes)],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StarkTree:
        tree = cls(
            epsilon=float(data["epsilon"]),
            root_limit=int(data["root_limit"]),
            leaf_bias=float(data["leaf_bias"]),
            leader_topk=int(data["leader_topk"]),
            n_child=int(data["n_child"]),
            max_reemits=int(data.get("max_reemits", 3)),
        )
        for raw in data.get("nodes", []):
            node = StarkNode.from_dict(raw)
            tree.nodes[node.node_id] = node
        tree.root_id = data.get("root_id")
        tree.next_id = int(data.get("next_id", len(tree.nodes)))
        tree.leader_ids = [int(i) for i in data.get("leader_ids", [])]
        if "best_id" in data:
            tree.best_id = data["best_id"]
        else:  # a tree saved before the best was tracked
            tree.recompute_best()
        version, internal, gauss = data["rng_state"]
        tree.rng.setstate((version, tuple(internal), gauss))
        return tree
