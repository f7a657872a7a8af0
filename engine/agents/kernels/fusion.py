"""Fusion groups: the sets of captured nodes one generated kernel can compute in one pass.

`fusion_groups` offers every candidate, overlapping ones included (a pointwise run is also
the tail of a matmul's epilogue group): they are the plan's options, and the planner picks
a disjoint subset (`disjoint`). Three kinds (ir.FusionGroup):

- pointwise: a maximal connected set of pointwise nodes of one output shape (their other
  operands may be any broadcastable tensors, parameters or scalars);
- reduction: one reduction (the anchor) with its pointwise prologue (same-shape ops on its
  input, read by nothing outside the group, all from one source tensor) and its epilogue
  (pointwise ops reading the reduced value, at the reduced shape or, for a keepdim
  reduction, at the full shape together with the source: x / sqrt(mean(x**2) + eps) is one
  group). The bare anchor with only its prologue is offered too;
- epilogue: a matmul/conv (the anchor, kept as a library call) and the maximal pointwise
  chain after it, when nothing else reads the anchor's output.

Every group is convex: no path leaves it and comes back, so it can run as one kernel
between the torch ops around it. Ids number groups by the position of their first node.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cached_property

from engine.agents.kernels.ir import OP_CLASSES, CapturedGraph, FusionGroup, GraphNode

KIND_ORDER = {"pointwise": 0, "reduction": 1, "epilogue": 2}


@dataclass(frozen=True)
class GraphIndex:
    """Positions, readers and reachability of a captured graph's nodes."""

    graph: CapturedGraph

    @cached_property
    def position(self) -> dict[str, int]:
        return {n.name: i for i, n in enumerate(self.graph.nodes)}

    @cached_property
    def by_name(self) -> dict[str, GraphNode]:
        return {n.name: n for n in self.graph.nodes}

    @cached_property
    def readers(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {n.name: [] for n in self.graph.nodes}
        for node in self.graph.nodes:
            for name in dict.fromkeys(self.operands(node)):
                found[name].append(node.name)
        return found

    @cached_property
    def descendants(self) -> dict[str, frozenset[str]]:
        """Every node reachable from each node (itself excluded)."""
        found: dict[str, frozenset[str]] = {}
        for node in reversed(self.graph.nodes):
            reach: set[str] = set()
            for reader in self.readers[node.name]:
                reach.add(reader)
                reach |= found[reader]
            found[node.name] = frozenset(reach)
        return found

    def operands(self, node: GraphNode) -> list[str]:
        return [a.node for a in node.args if a.node is not None and a.node in self.position]

    def shape(self, name: str) -> tuple[int, ...] | None:
        meta = self.by_name[name].meta
        return None if meta is None else tuple(meta.shape)

    def read_outside(self, name: str, group: set[str]) -> bool:
        return name in self.graph.outputs or any(r not in group for r in self.readers[name])

    def is_convex(self, group: set[str]) -> bool:
        leaving = set().union(*(self.descendants[n] for n in group)) - group
        return not any(self.descendants[n] & group for n in leaving)


def fusion_groups(graph: CapturedGraph) -> list[FusionGroup]:
    """Every candidate group of `graph`, in a deterministic order, ids "g0", "g1", ..."""
    index = GraphIndex(graph)
    candidates: list[tuple[str, set[str], str | None]] = []
    candidates += [("pointwise", g, None) for g in pointwise_sets(index)]
    for node in graph.nodes:
        if node.op_class == "reduction" and _tensor_input(index, node):
            for with_epilogue in (True, False):
                group = reduction_set(index, node, with_epilogue)
                if group is not None:
                    candidates.append(("reduction", group, node.name))
        elif node.op_class in ("matmul", "conv"):
            group = epilogue_set(index, node)
            if group is not None:
                candidates.append(("epilogue", group, node.name))
    ordered = sorted(
        candidates,
        key=lambda c: (
            min(index.position[n] for n in c[1]),
            KIND_ORDER[c[0]],
            -len(c[1]),
            sorted(index.position[n] for n in c[1]),
        ),
    )
    groups: list[FusionGroup] = []
    seen: set[tuple[str, frozenset[str]]] = set()
    for kind, nodes, anchor in ordered:
        key = (kind, frozenset(nodes))
        if key in seen or not index.is_convex(nodes):
            continue
        seen.add(key)
        groups.append(_make_group(index, f"g{len(groups)}", kind, nodes, anchor))
    return groups


def _make_group(
    index: GraphIndex, group_id: str, kind: str, nodes: set[str], anchor: str | None
) -> FusionGroup:
    names = tuple(sorted(nodes, key=index.position.__getitem__))
    inputs: list[str] = []
    for name in names:
        inputs += [a for a in index.operands(index.by_name[name]) if a not in nodes]
    return FusionGroup(
        id=group_id,
        kind=kind,  # type: ignore[arg-type]
        nodes=names,
        inputs=tuple(dict.fromkeys(inputs)),
        outputs=tuple(n for n in names if index.read_outside(n, nodes)),
        anchor=anchor,
        summary=" -> ".join(index.by_name[n].kind for n in names),
    )


def pointwise_sets(index: GraphIndex) -> list[set[str]]:
    """Pointwise nodes joined to their same-shape pointwise producers' groups, in
    topological order, as long as the union stays convex (greedy, so deterministic)."""
    groups: list[set[str]] = []
    group_of: dict[str, int] = {}
    for node in index.graph.nodes:
        if node.op_class != "pointwise":
            continue
        shape = index.shape(node.name)
        joined = list(
            dict.fromkeys(
                group_of[a]
                for a in index.operands(node)
                if a in group_of and index.shape(a) == shape
            )
        )
        union = {node.name}.union(*(groups[g] for g in joined))
        if joined and index.is_convex(union):
            target = joined[0]
            for other in joined[1:]:
                for name in groups[other]:
                    group_of[name] = target
                groups[other] = set()
            groups[target] = union
        else:
            target = next(
                (g for g in joined if index.is_convex(groups[g] | {node.name})), len(groups)
            )
            if target == len(groups):
                groups.append(set())
            groups[target].add(node.name)
        group_of[node.name] = target
    return [g for g in groups if g and any(index.by_name[n].kind != "identity" for n in g)]


def _tensor_input(index: GraphIndex, node: GraphNode) -> str | None:
    first = node.args[0].node if node.args else None
    return first if first is not None and index.shape(first) is not None else None


def reduction_set(index: GraphIndex, anchor: GraphNode, with_epilogue: bool) -> set[str] | None:
    """The anchor, its prologue and (with_epilogue) its epilogue; None if no valid group."""
    for allow_prologue in (True, False):
        group = _reduction_fixpoint(index, anchor, with_epilogue, allow_prologue)
        if group is not None:
            return group
    return None


def _reduction_fixpoint(
    index: GraphIndex, anchor: GraphNode, with_epilogue: bool, allow_prologue: bool
) -> set[str] | None:
    source = _tensor_input(index, anchor)
    assert source is not None
    full = index.shape(source)
    candidates = _prologue_candidates(index, source, full) if allow_prologue else set()
    prologue, epilogue = set(candidates), set[str]()
    for _ in range(len(index.graph.nodes) + 1):
        sources = _full_inputs(index, prologue | {anchor.name}, full)
        if len(sources) > 1:
            return None
        if with_epilogue:
            epilogue = _grow_epilogue(index, anchor, prologue, sources, full)
        kept = _prune_prologue(index, candidates, anchor.name, epilogue)
        if kept == prologue:
            return prologue | {anchor.name} | epilogue
        prologue = kept
    return None


def _prologue_candidates(index: GraphIndex, source: str, full: tuple[int, ...] | None) -> set[str]:
    """Pointwise ancestors of the reduction's input at its shape, through pointwise nodes."""
    found: set[str] = set()
    stack = [source]
    while stack:
        name = stack.pop()
        node = index.by_name[name]
        if name in found or node.op_class != "pointwise" or index.shape(name) != full:
            continue
        found.add(name)
        stack += index.operands(node)
    return found


def _prune_prologue(
    index: GraphIndex, candidates: set[str], anchor: str, epilogue: set[str]
) -> set[str]:
    """The candidates all of whose readers are in the group (decided readers-first)."""
    kept: set[str] = set()
    for name in sorted(candidates, key=index.position.__getitem__, reverse=True):
        if not index.read_outside(name, kept | {anchor} | epilogue):
            kept.add(name)
    return kept


def _full_inputs(index: GraphIndex, group: set[str], full: tuple[int, ...] | None) -> set[str]:
    """The full-size tensors the group reads from outside: at most one source is allowed."""
    size = _numel(full)
    found = set()
    for name in group:
        for arg in index.operands(index.by_name[name]):
            if arg not in group and _numel(index.shape(arg)) >= size:
                found.add(arg)
    return found


def _numel(shape: tuple[int, ...] | None) -> int:
    total = 1
    for size in shape or ():
        total *= size
    return total


def _grow_epilogue(
    index: GraphIndex,
    anchor: GraphNode,
    prologue: set[str],
    sources: set[str],
    full: tuple[int, ...] | None,
) -> set[str]:
    reduced = index.shape(anchor.name)
    shapes = {reduced}
    if reduced is not None and full is not None and len(reduced) == len(full):
        shapes.add(full)  # keepdim: the reduced value broadcasts back over the source
    group = prologue | {anchor.name}
    epilogue: set[str] = set()
    for node in index.graph.nodes[index.position[anchor.name] + 1 :]:
        if node.op_class != "pointwise" or index.shape(node.name) not in shapes:
            continue
        operands = index.operands(node)
        if not any(a == anchor.name or a in epilogue for a in operands):
            continue
        if all(_may_read(index, a, group | epilogue, sources, full) for a in operands):
            epilogue.add(node.name)
    return epilogue


def _may_read(
    index: GraphIndex, arg: str, group: set[str], sources: set[str], full: tuple[int, ...] | None
) -> bool:
    if arg in group:
        return True
    if _numel(index.shape(arg)) >= _numel(full) and arg not in sources:
        return False  # a second full-size input
    return not any(arg in index.descendants[g] for g in group)  # convexity


def epilogue_set(index: GraphIndex, anchor: GraphNode) -> set[str] | None:
    """The matmul/conv and the pointwise nodes after it at its shape; None when another
    node (or the return) reads the anchor, or no pointwise node follows it."""
    shape = index.shape(anchor.name)
    if shape is None:
        return None
    group = {anchor.name}
    for node in index.graph.nodes[index.position[anchor.name] + 1 :]:
        if node.op_class != "pointwise" or index.shape(node.name) != shape:
            continue
        operands = index.operands(node)
        if not any(a in group for a in operands):
            continue
        if all(a in group or not any(a in index.descendants[g] for g in group) for a in operands):
            group.add(node.name)
    if len(group) == 1 or index.read_outside(anchor.name, group):
        return None
    return group


def disjoint(groups: list[FusionGroup] | tuple[FusionGroup, ...]) -> bool:
    """Whether no node belongs to two of `groups` (a plan may only fuse such a set)."""
    names = [n for g in groups for n in g.nodes]
    return len(names) == len(set(names))


def op_class_counts(graph: CapturedGraph) -> dict[str, int]:
    """How many nodes of each op class the graph has (every class present, zeros too)."""
    counts = Counter(n.op_class for n in graph.nodes)
    return {cls: counts.get(cls, 0) for cls in OP_CLASSES}
