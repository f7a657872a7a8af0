"""The state of one reduction group's C++ while `cpp_reduction` writes its loops: the
operands (graph values and layer_norm's module weights), the output buffers, their strides
in the [outer, reduced, inner] layout, and the evaluation of group nodes at a position.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.agents.kernels.cpp_accumulate import Accumulator
from engine.agents.kernels.cpp_function import KernelFunction, UnsupportedGroup
from engine.agents.kernels.cpp_ops import op_expression, scalar_operand
from engine.agents.kernels.cpp_reduction_plan import ReductionPlan, Stat
from engine.agents.kernels.cpp_text import CodeWriter
from engine.agents.kernels.ir import GraphNode

Load = Callable[[str], str]  # external value -> its C++ expression at the current position


# the key under which the epilogue's stats hold the cached stat's element at this position
CACHED = "@cached"


class ReductionWriter:
    """Emits one reduction group's loops into `fn.body`."""

    def __init__(self, fn: KernelFunction, plan: ReductionPlan, schedule: dict[str, Any]):
        self.fn, self.plan, self.schedule = fn, plan, schedule
        self.w = fn.body
        self.namer = fn.namer
        layout = plan.layout
        self.columns = layout.inner > 1 and schedule["loop_order"] == "inner"
        self.vec = schedule["vector"] == "aten" and (layout.inner == 1 or self.columns)
        # strided loads (loop_order "reduced" with inner > 1) cannot use Vec: scalar loops
        self.loops = (
            schedule
            if self.vec or schedule["vector"] != "aten"
            else {**schedule, "vector": "scalar"}
        )
        self.operands: dict[str, tuple[str, tuple[int, ...]]] = {}  # name -> (pointer, shape)
        self.stems: dict[str, str] = {}  # identifier stems of the "affine:..." operands
        self.reduced_out: dict[str, str] = {}
        self.full_out: dict[str, str] = {}
        order = [fn.graph.node(n) for n in fn.group.nodes]
        self.order: list[GraphNode] = order
        self.group_names = {n.name for n in order}

    # --- setup -----------------------------------------------------------------------

    def prepare(self) -> None:
        plan, fn = self.plan, self.fn
        for node in self.order:
            for arg in node.args:
                if arg.node is not None and arg.node not in self.group_names:
                    meta = fn.graph.node(arg.node).meta
                    if meta is None:
                        raise UnsupportedGroup(f"{arg.node} has no recorded shape")
                    self.operands.setdefault(arg.node, (fn.pointer(arg.node), meta.shape))
        normalized = tuple(plan.anchor.params.get("normalized_shape") or ())
        for role, (where, ref) in plan.affine.items():
            key = f"affine:{role}"
            if where == "node":
                self.operands[key] = self.operands[ref]
                self.stems[key] = ref
            else:
                self.stems[key] = f"{plan.anchor.name}_{role}"
                param = fn.attribute(ref, self.stems[key])
                self.operands[key] = (fn.pointer(param.python), normalized)
        for name in fn.group.outputs:
            node = fn.graph.node(name)
            assert node.meta is not None
            if name in plan.reduced or (name == plan.anchor.name and plan.program.reduced_value):
                self.reduced_out[name] = fn.output(name, node.meta.shape)
            elif node.meta.shape == plan.layout.shape:
                self.full_out[name] = fn.output(name, node.meta.shape)
            else:
                raise UnsupportedGroup(f"output {name} has shape {list(node.meta.shape)}")
        layout = plan.layout
        self.w.line(
            f"constexpr int64_t kOuter = {layout.outer}, kReduced = {layout.reduced}, "
            f"kInner = {layout.inner};  // {list(layout.shape)} as [outer, reduced, inner]"
        )

    def ident(self, name: str, role: str = "") -> str:
        """The C++ identifier of an operand's value (or its `role`: "row", ...)."""
        return self.namer.get(name, role, base=self.stems.get(name))

    def strides(self, name: str, reduced: bool) -> tuple[int, int, int]:
        shape = self.operands[name][1]
        layout = self.plan.layout
        found = (
            layout.reduced_strides(shape, self.plan.reduced_shape)
            if reduced
            else layout.full_strides(shape)
        )
        if found is None:
            part = "output position" if reduced else "[outer, reduced, inner] part"
            raise UnsupportedGroup(
                f"{name} {list(shape)} is broadcast over only some dims of an {part} of "
                f"{list(layout.shape)}: no single stride walks it"
            )
        return found

    def lit(self, vec: bool) -> Callable[[float], str]:
        return lambda value: scalar_operand(value, vec)

    # --- values --------------------------------------------------------------------------

    def emit_nodes(
        self,
        w: CodeWriter,
        targets: set[str],
        known: dict[str, str],
        load: Load,
        vec: bool,
        stats: dict[str, str],
        assign: Callable[[str, str], str] | None = None,
    ) -> None:
        """Compute what `targets` need (group nodes not in `known`), in graph order."""
        kind = "Vec" if vec else "float"

        def value(name: str) -> str:
            if name not in known:
                known[name] = load(name)
            return known[name]

        for node in self.needed(targets, known):
            if node.name == self.plan.anchor.name:
                expression = self.full_value(value, vec, stats)
            else:
                operands = [
                    value(a.node) if a.node is not None else scalar_operand(a.value, vec)
                    for a in node.args
                ]
                expression = op_expression(node, operands, vec)
            name = self.namer.get(node.name)
            w.line(assign(name, expression) if assign else f"const {kind} {name} = {expression};")
            known[node.name] = f"{name}[k]" if assign else name

    def needed(self, targets: set[str], known: dict[str, str]) -> list[GraphNode]:
        """The group nodes `targets` depend on that `known` does not hold, in graph order."""
        wanted, needed = set(targets), []
        for node in reversed(self.order):
            if node.name in wanted and node.name not in known:
                needed.append(node)
                wanted.update(a.node for a in node.args if a.node is not None)
        return list(reversed(needed))

    def full_value(self, value: Load, vec: bool, stats: dict[str, str]) -> str:
        program = self.plan.program
        if program.full_value is None:
            raise UnsupportedGroup(f"{self.plan.anchor.name} has no value at full positions")
        if CACHED in stats and program.cached_value is not None:
            expression = program.cached_value(stats[CACHED], stats, self.lit(vec))
        else:
            expression = program.full_value(value(self.plan.source), stats, self.lit(vec))
        if "affine:weight" in self.operands:
            expression = f"({expression}) * {value('affine:weight')}"
        if "affine:bias" in self.operands:
            expression = f"{expression} + {value('affine:bias')}"
        return expression

    def stat_targets(self) -> set[str]:
        return {self.plan.source} if self.plan.source in self.group_names else set()

    def final_targets(self) -> set[str]:
        return set(self.full_out)

    def reduced_targets(self) -> set[str]:
        """Reduced values the outputs or the full-position nodes read."""
        plan = self.plan
        read = {
            a.node for n in self.order if n.name in plan.full for a in n.args if a.node is not None
        }
        wanted = (set(self.reduced_out) | read) & (plan.reduced | {plan.anchor.name})
        if plan.program.reduced_value is None:
            wanted.discard(plan.anchor.name)
        return wanted

    def description(self) -> list[str]:
        layout = self.plan.layout
        if self.columns:
            how = f"tiles of adjacent inner positions ({'one Vec' if self.vec else '64 lanes'})"
        elif layout.inner == 1:
            how = "one row per iteration" + (", vectorised along it" if self.vec else "")
        else:
            how = "one output position per iteration, strided loads (loop_order=reduced)"
        return [
            f"layout [outer={layout.outer}, reduced={layout.reduced}, inner={layout.inner}]: {how}"
        ]

    def stat_accumulator(self, stat: Stat, lane_type: str, copies: int) -> Accumulator:
        name = self.namer.get(self.plan.anchor.name, f"{stat.name}_acc")
        return Accumulator(name, stat.combine, self.schedule["accumulate"], lane_type, copies)

    def stat_name(self, name: str) -> str:
        return self.namer.get(self.plan.anchor.name, name)


def offset(terms: list[tuple[str, int]]) -> str:
    """`o * 4096 + i`: the sum of index * stride, zero strides left out."""
    parts = [v if s == 1 else f"{v} * {s}" for v, s in terms if s and v != "0"]
    return " + ".join(parts) or "0"


def plus(pointer: str, at: str) -> str:
    return pointer if at == "0" else f"{pointer} + {at}"
