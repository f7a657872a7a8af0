"""What a reduction group computes, before any C++ is written: the [outer, reduced, inner]
layout, which nodes run where, and the statistics each reduction needs.

A group's nodes fall in three places:
- *free* nodes do not depend on the anchor (its prologue, and any side value): they are
  evaluated wherever they are read, at full positions (o, r, i) or at output positions (o, i);
- *reduced* nodes depend on the anchor and have its output's shape (`sum(x) * 2`):
  computed once per output position;
- *full* nodes depend on the anchor and have the input's shape (`x - mean`, or everything
  after a softmax): computed in a last pass over the reduced elements.

`Program` is the anchor's recipe: passes of accumulations over the reduced elements, scalar
steps between them (a mean, a reciprocal), then the anchor's value at an output position
(sum-like reductions) or at a full position (softmax, log_softmax, layer_norm, rms_norm).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from engine.agents.kernels.cpp_function import UnsupportedGroup
from engine.agents.kernels.cpp_layout import ReductionLayout, aligned, contiguous_dims
from engine.agents.kernels.cpp_ops import pointwise_reason
from engine.agents.kernels.ir import CapturedGraph, FusionGroup, GraphNode

SUM_LIKE = frozenset({"sum", "mean", "amax", "amin", "logsumexp", "var", "norm"})
ROW_WISE = frozenset({"softmax", "log_softmax", "layer_norm", "rms_norm"})
CPP_REDUCTIONS = SUM_LIKE | ROW_WISE

# Expression builders: (stats: name -> C++ expression, k: number -> literal) -> expression
Lit = Callable[[float], str]
StatExpr = Callable[[dict[str, str], Lit], str]
ElementExpr = Callable[[str, dict[str, str], Lit], str]


@dataclass(frozen=True, slots=True)
class Stat:
    name: str  # "max", "sum", ...: the accumulator reads `element` at each reduced element
    combine: str  # "sum" | "max" | "min"
    element: ElementExpr  # (x, stats, k) -> the value accumulated
    cached: bool = False  # kept per reduced element in a row buffer, for `cached_value`


@dataclass(frozen=True, slots=True)
class Derived:
    name: str
    value: StatExpr


@dataclass(slots=True)
class Program:
    steps: list[list[Stat] | Derived]  # a list of stats is one pass over the reduced elements
    reduced_value: StatExpr | None = None  # sum-like: the anchor at an output position
    full_value: ElementExpr | None = None  # row-wise: the anchor at a full position
    # the anchor at a full position from the cached stat's element (softmax: exp(x - max) is
    # computed once, in the sum pass, instead of again in the epilogue)
    cached_value: ElementExpr | None = None


@dataclass(slots=True)
class ReductionPlan:
    anchor: GraphNode
    layout: ReductionLayout
    source: str  # the value reduced (anchor's first operand)
    program: Program
    nodes: list[GraphNode]  # all group nodes but the anchor, topological order
    free: set[str] = field(default_factory=set)
    reduced: set[str] = field(default_factory=set)
    full: set[str] = field(default_factory=set)
    affine: dict[str, tuple[str, str]] = field(default_factory=dict)  # role -> (node|attr, ref)

    @property
    def reduced_shape(self) -> tuple[int, ...]:
        assert self.anchor.meta is not None
        return self.anchor.meta.shape


def plan_reduction(graph: CapturedGraph, group: FusionGroup) -> ReductionPlan:
    """The plan of a reduction group; UnsupportedGroup (the reason) when C++ cannot do it."""
    if group.anchor is None:
        raise UnsupportedGroup(f"reduction group {group.id} has no anchor")
    anchor = graph.node(group.anchor)
    if anchor.kind not in CPP_REDUCTIONS:
        raise UnsupportedGroup(f"reduction '{anchor.kind}' ({anchor.name}) has no C++ template")
    if not anchor.args or not anchor.args[0].is_tensor:
        raise UnsupportedGroup(f"{anchor.name} reduces no tensor")
    source = str(anchor.args[0].node)
    source_meta = graph.node(source).meta
    if source_meta is None or anchor.meta is None:
        raise UnsupportedGroup(f"{anchor.name} or its input has no recorded shape")
    shape = source_meta.shape
    layout = ReductionLayout(shape, *_reduced_dims(anchor, shape))
    plan = ReductionPlan(
        anchor,
        layout,
        source,
        _program(anchor, layout.reduced),
        [graph.node(n) for n in group.nodes if n != anchor.name],
    )
    plan.affine = _affine(anchor)
    _classify(plan)
    return plan


def _reduced_dims(anchor: GraphNode, shape: tuple[int, ...]) -> tuple[int, int]:
    rank = len(shape)
    params = anchor.params
    if anchor.kind in ("softmax", "log_softmax"):
        dim = int(params.get("dim", rank - 1))
        return dim, dim + 1
    if anchor.kind in ("layer_norm", "rms_norm"):
        normalized = tuple(params.get("normalized_shape") or ())
        if not normalized or tuple(shape[rank - len(normalized) :]) != normalized:
            raise UnsupportedGroup(
                f"{anchor.name}: normalized_shape {list(normalized)} is not the trailing dims "
                f"of {list(shape)}"
            )
        return rank - len(normalized), rank
    dims = params.get("dim")
    dims = tuple(range(rank)) if dims is None or dims == () else tuple(dims)
    span = contiguous_dims(dims)
    if span is None:
        raise UnsupportedGroup(f"{anchor.name} reduces dims {list(dims)}, not consecutive ones")
    if anchor.kind == "norm" and params.get("p", 2) != 2:
        raise UnsupportedGroup(f"{anchor.name}: norm p={params.get('p')!r} (only p=2)")
    return span


def _affine(anchor: GraphNode) -> dict[str, tuple[str, str]]:
    """layer_norm's / rms_norm's weight and bias: a graph value or a module attribute."""
    roles = {"layer_norm": ("weight", "bias"), "rms_norm": ("weight",)}.get(anchor.kind, ())
    found: dict[str, tuple[str, str]] = {}
    for index, role in enumerate(roles, start=1):
        arg = anchor.args[index] if index < len(anchor.args) else None
        if arg is not None and arg.is_tensor:
            found[role] = ("node", str(arg.node))
        elif anchor.attrs.get(role):
            found[role] = ("attr", anchor.attrs[role])
    return found


def _classify(plan: ReductionPlan) -> None:
    anchor, layout = plan.anchor, plan.layout
    full_shape = layout.shape
    depends: set[str] = {anchor.name}
    for node in plan.nodes:
        reason = pointwise_reason(node)
        if reason is not None:
            raise UnsupportedGroup(reason)
        if node.meta is None:
            raise UnsupportedGroup(f"{node.name} has no recorded shape")
        reads = {a.node for a in node.args if a.node is not None}
        if not reads & depends:
            plan.free.add(node.name)
            continue
        depends.add(node.name)
        on_reduced = reads & (plan.reduced | {anchor.name})
        if (
            anchor.kind in SUM_LIKE
            and node.meta.shape == plan.reduced_shape
            and not reads & plan.full
        ):
            plan.reduced.add(node.name)
        elif aligned(node.meta.shape, len(full_shape)) == full_shape:
            if on_reduced and anchor.kind in SUM_LIKE:
                _check_broadcast(plan, node)
            plan.full.add(node.name)
        else:
            raise UnsupportedGroup(
                f"{node.name} has shape {list(node.meta.shape)}: neither the reduced "
                f"{list(plan.reduced_shape)} nor the full {list(full_shape)}"
            )


def _check_broadcast(plan: ReductionPlan, node: GraphNode) -> None:
    """A full-position node reading a reduced value must see it at (o, i): keepdim-like."""
    layout = plan.layout
    expected = (layout.inner if layout.outer > 1 else 0, 0, 1 if layout.inner > 1 else 0)
    if layout.full_strides(plan.reduced_shape) != expected:
        raise UnsupportedGroup(
            f"{node.name} broadcasts the reduced value {list(plan.reduced_shape)} against "
            f"{list(layout.shape)} along other dims than the reduced ones (keepdim=False)"
        )


def _program(anchor: GraphNode, count: int) -> Program:
    kind, params = anchor.kind, anchor.params

    def x_itself(x: str, s: dict[str, str], k: Lit) -> str:
        return x

    def square(x: str, s: dict[str, str], k: Lit) -> str:
        return f"{x} * {x}"

    def centred_square(x: str, s: dict[str, str], k: Lit) -> str:
        return f"({x} - {s['mean']}) * ({x} - {s['mean']})"

    def mean(s: dict[str, str], k: Lit) -> str:
        return f"{s['sum']} / {k(count)}"

    total = [Stat("sum", "sum", x_itself)]
    row_max = [Stat("max", "max", x_itself)]
    if kind == "sum":
        return Program([total], reduced_value=lambda s, k: s["sum"])
    if kind == "mean":
        return Program([total], reduced_value=mean)
    if kind in ("amax", "amin"):
        combine = kind[1:]
        return Program([[Stat(combine, combine, x_itself)]], reduced_value=lambda s, k: s[combine])
    if kind == "norm":
        return Program(
            [[Stat("sumsq", "sum", square)]],
            reduced_value=lambda s, k: f"stark::sqrt({s['sumsq']})",
        )
    if kind == "var":
        divisor = max(count - float(params.get("correction", 1)), 0.0)
        return Program(
            [total, Derived("mean", mean), [Stat("m2", "sum", centred_square)]],
            reduced_value=lambda s, k: f"{s['m2']} / {k(divisor)}",
        )
    if kind == "logsumexp":
        shifted = Stat("sumexp", "sum", lambda x, s, k: f"stark::exp({x} - {s['shift']})")
        return Program(
            [
                row_max,
                Derived("shift", lambda s, k: f"stark::finite_or_zero({s['max']})"),
                [shifted],
            ],
            reduced_value=lambda s, k: f"stark::log({s['sumexp']}) + {s['shift']}",
        )
    exp_sum = [Stat("sumexp", "sum", lambda x, s, k: f"stark::exp({x} - {s['max']})")]
    if kind == "softmax":
        cached_exp = [Stat("sumexp", "sum", exp_sum[0].element, cached=True)]
        return Program(
            [row_max, cached_exp, Derived("inv", lambda s, k: f"{k(1.0)} / {s['sumexp']}")],
            full_value=lambda x, s, k: f"stark::exp({x} - {s['max']}) * {s['inv']}",
            cached_value=lambda c, s, k: f"{c} * {s['inv']}",
        )
    if kind == "log_softmax":
        return Program(
            [row_max, exp_sum, Derived("logsum", lambda s, k: f"stark::log({s['sumexp']})")],
            full_value=lambda x, s, k: f"{x} - {s['max']} - {s['logsum']}",
        )
    eps = float(params.get("eps", 1e-5))
    if kind == "layer_norm":
        return Program(
            [
                total,
                Derived("mean", mean),
                [Stat("m2", "sum", centred_square)],
                Derived("rstd", lambda s, k: f"stark::rsqrt({s['m2']} / {k(count)} + {k(eps)})"),
            ],
            full_value=lambda x, s, k: f"({x} - {s['mean']}) * {s['rstd']}",
        )
    if kind == "rms_norm":
        return Program(
            [
                [Stat("sumsq", "sum", square)],
                Derived("rrms", lambda s, k: f"stark::rsqrt({s['sumsq']} / {k(count)} + {k(eps)})"),
            ],
            full_value=lambda x, s, k: f"{x} * {s['rrms']}",
        )
    raise UnsupportedGroup(f"reduction '{kind}' has no C++ template")
