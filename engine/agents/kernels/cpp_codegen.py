"""The CPU C++ code generator: one `at::Tensor gN_...(...)` function per fusion group.

- pointwise groups: one fused pass over the broadcast domain (`cpp_pointwise`);
- epilogue groups: the matmul/conv anchor stays its ATen call inside the function, then the
  pointwise ops after it run in one pass over its output, in place (`cpp_epilogue`);
- reduction groups: prologue on load, the reduction's passes, the reduced-shape and the
  full-shape epilogues (`cpp_reduction`).

Every function checks its tensors (float32, CPU, the captured shape) before reading them,
works on contiguous data, and threads through at::parallel_for, ATen's own OpenMP pool, so
it follows torch.get_num_threads(). The schedule's "cpp" keys (`engine.agents.kernels.
schedule`) choose vectorisation, grain, unroll, accumulation and loop order. The module
(`engine.agents.kernels.module`) puts the functions after `cpp_prelude.cpp_prelude()` and
builds them in one extension. No torch import: this runs in the agent's process.
"""

from __future__ import annotations

from typing import Any

from engine.agents.kernels.cpp_epilogue import ANCHOR_KINDS, anchor_reason, emit_anchor
from engine.agents.kernels.cpp_function import (
    KernelFunction,
    UnsupportedGroup,
    describe_schedule,
)
from engine.agents.kernels.cpp_layout import broadcast_shapes
from engine.agents.kernels.cpp_ops import pointwise_reason
from engine.agents.kernels.cpp_pointwise import Operand, emit_elementwise
from engine.agents.kernels.cpp_reduction import emit_reduction
from engine.agents.kernels.cpp_reduction_plan import plan_reduction
from engine.agents.kernels.ir import CapturedGraph, FusionGroup, GeneratedGroup, GraphNode
from engine.agents.kernels.schedule import ScheduleError, resolve

ELEMENTWISE_KEYS = ("vector", "grain", "unroll")
REDUCTION_KEYS = ("vector", "grain", "unroll", "accumulate", "loop_order")


def supports_cpp(graph: CapturedGraph, group: FusionGroup) -> str | None:
    """None when `generate_cpp` can write the group, else the reason it cannot."""
    try:
        generate_cpp(graph, group, {})
    except UnsupportedGroup as exc:
        return str(exc)
    return None


def generate_cpp(
    graph: CapturedGraph, group: FusionGroup, schedule: dict[str, Any] | None
) -> GeneratedGroup:
    """The group's C++ function and the call forward() makes; UnsupportedGroup (a
    ValueError) with the reason when the group is outside what C++ generation covers."""
    try:
        resolved = resolve("cpp", group.kind, schedule)
    except ScheduleError as exc:
        raise UnsupportedGroup(str(exc)) from None
    nodes = _group_nodes(graph, group)
    fn = KernelFunction(graph, group, resolved)
    summary = group.summary or " -> ".join(n.kind for n in nodes)
    if group.kind == "pointwise":
        lines = _pointwise(fn, nodes)
        keys = ELEMENTWISE_KEYS
    elif group.kind == "epilogue":
        lines = _epilogue(fn, nodes)
        keys = ELEMENTWISE_KEYS
    elif group.kind == "reduction":
        lines = emit_reduction(fn, plan_reduction(graph, group), resolved)
        keys = REDUCTION_KEYS
    else:
        raise UnsupportedGroup(f"group kind {group.kind!r} has no C++ generator")
    names = ", ".join(n.name if n.name == n.kind else f"{n.name} ({n.kind})" for n in nodes)
    description = [
        f"Fuses {names}.",
        *lines,
        f"schedule: {describe_schedule(resolved, keys)}",
    ]
    return fn.generated(summary, description)


def _group_nodes(graph: CapturedGraph, group: FusionGroup) -> list[GraphNode]:
    if graph.device != "cpu":
        raise UnsupportedGroup(f"the C++ kernels run on the CPU; this graph runs on {graph.device}")
    if not group.nodes or not group.outputs:
        raise UnsupportedGroup(f"group {group.id} has no nodes or no outputs")
    try:
        nodes = [graph.node(n) for n in group.nodes]
        external = [graph.node(a.node) for n in nodes for a in n.args if a.node is not None]
    except KeyError as exc:
        raise UnsupportedGroup(str(exc).strip("'\"")) from None
    names = {n.name for n in nodes}
    for output in group.outputs:
        if output not in names:
            raise UnsupportedGroup(f"output {output} of {group.id} is not one of its nodes")
    for node in [*nodes, *(e for e in external if e.name not in names)]:
        if node.meta is None:
            raise UnsupportedGroup(f"{node.name} has no recorded tensor shape")
        if node.meta.dtype != "float32":
            raise UnsupportedGroup(
                f"{node.name} is {node.meta.dtype}: the C++ kernels take float32 only"
            )
    return nodes


def _domain(nodes: list[GraphNode]) -> tuple[int, ...]:
    try:
        return broadcast_shapes([n.meta.shape for n in nodes if n.meta is not None])
    except ValueError as exc:
        raise UnsupportedGroup(str(exc)) from None


def _check_outputs(fn: KernelFunction, domain: tuple[int, ...]) -> None:
    for output in fn.group.outputs:
        meta = fn.graph.node(output).meta
        if meta is None or meta.shape != domain:
            shape = list(meta.shape) if meta is not None else None
            raise UnsupportedGroup(
                f"output {output} has shape {shape}, not the fused pass's {list(domain)}"
            )


def _operands(fn: KernelFunction, nodes: list[GraphNode], skip: set[str]) -> list[Operand]:
    """The values the nodes read from outside `skip` (the group), with their data pointers."""
    found: dict[str, Operand] = {}
    for node in nodes:
        for arg in node.args:
            if arg.node is None or arg.node in skip or arg.node in found:
                continue
            meta = fn.graph.node(arg.node).meta
            assert meta is not None  # checked by _group_nodes
            found[arg.node] = Operand(arg.node, meta.shape, fn.pointer(arg.node))
    return list(found.values())


def _pointwise(fn: KernelFunction, nodes: list[GraphNode]) -> list[str]:
    for node in nodes:
        reason = pointwise_reason(node)
        if reason is not None:
            raise UnsupportedGroup(reason)
    domain = _domain(nodes)
    _check_outputs(fn, domain)
    names = {n.name for n in nodes}
    operands = _operands(fn, nodes, names)
    stores = {o: fn.output(o, domain) for o in fn.group.outputs}
    emit_elementwise(
        fn.body,
        fn.namer,
        domain=domain,
        nodes=nodes,
        operands=operands,
        stores=stores,
        schedule=fn.schedule,
    )
    return [f"One pass over {list(domain)}."]


def _epilogue(fn: KernelFunction, nodes: list[GraphNode]) -> list[str]:
    group = fn.group
    anchor = next((n for n in nodes if n.name == group.anchor), None)
    if anchor is None or anchor.kind not in ANCHOR_KINDS:
        kind = anchor.kind if anchor is not None else None
        raise UnsupportedGroup(f"epilogue group {group.id} has no matmul/conv anchor ({kind})")
    reason = anchor_reason(anchor)
    if reason is not None:
        raise UnsupportedGroup(reason)
    rest = [n for n in nodes if n is not anchor]
    for node in rest:
        reason = pointwise_reason(node)
        if reason is not None:
            raise UnsupportedGroup(reason)
    if not rest:
        raise UnsupportedGroup(f"epilogue group {group.id} has no pointwise op after its anchor")
    domain = _domain(nodes)
    outputs = [o for o in group.outputs if o != anchor.name]
    for output in outputs:
        meta = fn.graph.node(output).meta
        if meta is None or meta.shape != domain:
            raise UnsupportedGroup(
                f"output {output} does not have the epilogue's shape {list(domain)}"
            )
    tensor = emit_anchor(fn, anchor)
    assert anchor.meta is not None
    anchor_pointer = fn.namer.get(anchor.name, "ptr")
    fn.body.line(f"const float* {anchor_pointer} = {tensor}.data_ptr<float>();")
    operands = [Operand(anchor.name, anchor.meta.shape, anchor_pointer)]
    operands += _operands(fn, rest, {n.name for n in nodes})
    in_place = anchor.name not in group.outputs and anchor.meta.shape == domain
    stores = {}
    for index, output in enumerate(outputs):
        reuse = tensor if in_place and index == len(outputs) - 1 else None
        stores[output] = fn.output(output, domain, reuse=reuse)
    if anchor.name in group.outputs:
        fn.tensor(tensor, anchor.name)
    emit_elementwise(
        fn.body,
        fn.namer,
        domain=domain,
        nodes=rest,
        operands=operands,
        stores=stores,
        schedule=fn.schedule,
    )
    where = "in place on its output" if in_place else f"into new buffers of {list(domain)}"
    return [f"{anchor.name} stays an ATen call; the ops after it run in one pass {where}."]
