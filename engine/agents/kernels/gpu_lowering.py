"""Lowering a fusion group to the plan its GPU kernel follows (`gpu_plan`): pointwise and
epilogue groups become a `PointwisePlan` (one pass over the output's elements; an epilogue's
matmul/conv anchor stays a torch call and the pass runs in place on its result), reductions
a `RowPlan`: a row is one choice of the kept dims, its columns the reduced dims, so a
reduction over a non-last dim (KernelBench's RMSNorm over channels) is a row of strided
elements; with the reduction's pointwise prologue, recomputed on each pass over a row, and
its epilogue, per row or per element.

Both code generators render these plans, so Triton and CUDA C accept the same groups and
give the same reasons for the rest.
"""

from __future__ import annotations

import math

from engine.agents.kernels.gpu_exprs import ROW_REDUCTIONS
from engine.agents.kernels.gpu_plan import (
    Axis,
    KernelParam,
    Load,
    Operand,
    PointwisePlan,
    RowPlan,
    Space,
    Step,
    Store,
    Unsupported,
    anchor_call,
    broadcast_terms,
    check_pointwise_node,
    identifier,
    index_terms,
    kernel_params,
    kernel_title,
    operand,
    self_expr,
    tensor_meta,
)
from engine.agents.kernels.ir import CapturedGraph, FusionGroup, GraphNode, TensorMeta

GroupPlan = PointwisePlan | RowPlan
_NOT_ROWS = {
    "argmax": "argmax/argmin give int64 indices: not generated for GPU yet",
    "argmin": "argmax/argmin give int64 indices: not generated for GPU yet",
    "group_norm": "group_norm's rows read per-channel weights: not generated for GPU yet",
    "batch_norm": "batch_norm (per-channel statistics and parameters): not generated for GPU yet",
}


def plan_group(graph: CapturedGraph, group: FusionGroup) -> GroupPlan | str:
    """The group's plan, or why the GPU generators cannot write it."""
    try:
        if group.kind == "reduction":
            return plan_rows(graph, group)
        return plan_pointwise(graph, group)
    except Unsupported as why:
        return str(why)


def plan_pointwise(graph: CapturedGraph, group: FusionGroup) -> PointwisePlan:
    members = set(group.nodes)
    anchor_node = graph.node(group.anchor) if group.kind == "epilogue" and group.anchor else None
    if group.kind == "epilogue" and anchor_node is None:
        raise Unsupported(f"epilogue group {group.id} names no anchor")
    body = [graph.node(n) for n in group.nodes if anchor_node is None or n != anchor_node.name]
    if not body:
        raise Unsupported(f"group {group.id} has no pointwise op")
    for node in body:
        check_pointwise_node(node)
        tensor_meta(graph, node.name)
    outputs = [o for o in group.outputs if anchor_node is None or o != anchor_node.name]
    if not outputs:
        raise Unsupported(f"group {group.id} outputs no pointwise value")
    shape = graph.node(outputs[0]).meta.shape  # type: ignore[union-attr]
    for name in outputs:
        if tensor_meta(graph, name).shape != shape:
            raise Unsupported(f"group {group.id}'s outputs have different shapes")
    anchor = None
    params = kernel_params(graph, list(group.inputs))
    if anchor_node is not None:
        anchor, extra = anchor_call(graph, anchor_node)
        taken = {p.name for p in params}
        params += [p for p in extra if p.name not in taken]
        members.discard(anchor_node.name)
    loads: dict[str, Load] = {}
    steps = []
    for node in body:
        operands = []
        for arg in node.args:
            if arg.is_tensor and arg.node not in members:
                assert arg.node is not None
                meta = tensor_meta(graph, arg.node)
                terms = broadcast_terms(meta.shape, shape)
                load = Load(f"v_{arg.node}", identifier(arg.node), "full", terms, meta.dtype)
                loads.setdefault(arg.node, load)
            operands.append(operand(arg.node, arg.value, members, f"v_{arg.node}"))
        steps.append(Step(f"v_{node.name}", node.kind, dict(node.params), tuple(operands)))
    stores = []
    for name in outputs:
        meta = tensor_meta(graph, name)
        stores.append(Store(f"v_{name}", name, identifier(name), "full", shape, meta.dtype))
    if anchor is not None and anchor_node is not None:
        in_place = (
            anchor_node.name not in group.outputs
            and anchor.meta.shape == shape
            and anchor.meta.dtype == stores[-1].dtype
            and loads.get(anchor_node.name) is not None
            and loads[anchor_node.name].terms is None
        )
        if in_place:  # the anchor's fresh result takes the final value: no new buffer
            last = stores[-1]
            stores[-1] = Store(last.var, last.output, anchor.var, "full", shape, last.dtype)
    title = kernel_title(graph, group)
    return PointwisePlan(group, title, tuple(params), shape, tuple(loads.values()),
                         tuple(steps), tuple(stores), anchor)  # fmt: skip


def reduced_dims(anchor: GraphNode, rank: int) -> tuple[int, ...]:
    params = anchor.params
    if anchor.kind in ("softmax", "log_softmax"):
        dims: tuple[int, ...] = (int(params["dim"]),)
    elif anchor.kind in ("layer_norm", "rms_norm"):
        dims = tuple(range(rank - len(params["normalized_shape"]), rank))
    else:
        raw = params.get("dim")
        if raw is None or raw == () or raw == []:
            dims = tuple(range(rank))
        else:
            dims = tuple(raw) if isinstance(raw, list | tuple) else (int(raw),)
    return tuple(sorted({d % rank for d in dims}))


def row_shape_of(
    operand_shape: tuple[int, ...], node_shape: tuple[int, ...], reduced: tuple[int, ...], rank: int
) -> tuple[int, ...]:
    """An operand of a per-row node (shaped like the reduction's result, with or without
    keepdim), aligned to the kept dims only."""
    if len(operand_shape) > len(node_shape):
        raise Unsupported(f"an operand of shape {operand_shape} does not broadcast to {node_shape}")
    padded = (1,) * (len(node_shape) - len(operand_shape)) + tuple(operand_shape)
    if len(node_shape) != rank:
        return padded
    if any(padded[d] != 1 for d in reduced):
        raise Unsupported(f"an operand of shape {operand_shape} varies along the reduced dims")
    return tuple(s for d, s in enumerate(padded) if d not in reduced)


def plan_rows(graph: CapturedGraph, group: FusionGroup) -> RowPlan:
    if not group.anchor:
        raise Unsupported(f"reduction group {group.id} names no anchor")
    anchor = graph.node(group.anchor)
    if anchor.kind in _NOT_ROWS:
        raise Unsupported(f"{anchor.name}: {_NOT_ROWS[anchor.kind]}")
    if anchor.kind not in ROW_REDUCTIONS:
        raise Unsupported(f"{anchor.name} ({anchor.kind}) is not a reduction the GPU kernels write")
    if anchor.kind == "norm" and float(anchor.params.get("p", 2)) not in (1.0, 2.0):
        raise Unsupported(f"{anchor.name}: norm p={anchor.params.get('p')} (only p=1, p=2)")
    if not anchor.args or not anchor.args[0].is_tensor:
        raise Unsupported(f"{anchor.name} reduces no tensor")
    x_name = anchor.args[0].node
    assert x_name is not None
    full = tensor_meta(graph, x_name).shape
    rank = len(full)
    if rank == 0:
        raise Unsupported(f"{anchor.name} reduces a 0-d tensor")
    reduced = reduced_dims(anchor, rank)
    kept_shape = tuple(s for d, s in enumerate(full) if d not in reduced)
    keep_shape = tuple(1 if d in reduced else s for d, s in enumerate(full))
    axes: tuple[Axis, ...] = tuple("col" if d in reduced else "row" for d in range(rank))
    norm_shape = anchor.params.get("normalized_shape")
    if (
        anchor.kind in ("layer_norm", "rms_norm")
        and tuple(norm_shape) != full[rank - len(reduced) :]
    ):
        raise Unsupported(f"{anchor.name}: normalized_shape is not the trailing dims")
    rows, cols = math.prod(kept_shape), math.prod(full[d] for d in reduced)
    if cols == 1:
        raise Unsupported(f"{anchor.name} reduces dims of size 1")
    members = set(group.nodes)
    ancestors = _ancestors(graph, anchor.name, members)
    after = _descendants(graph, group, anchor.name)
    row_valued = anchor.kind not in ("softmax", "log_softmax", "layer_norm", "rms_norm")
    space: dict[str, Space] = {anchor.name: "row" if row_valued else "full"}
    for name in group.nodes:
        if name == anchor.name:
            continue
        node = graph.node(name)
        check_pointwise_node(node)
        meta = tensor_meta(graph, name)
        is_row = meta.shape in (kept_shape, keep_shape)
        space[name] = "row" if name in after and name not in ancestors and is_row else "full"
        if space[name] == "full":
            broadcast_terms(meta.shape, full)  # raises when it does not broadcast to the rows
    loads: dict[tuple[str, Space], Load] = {}
    attr_params: list[KernelParam] = []

    def read(
        arg_node: str | None, value: object, reader_space: Space, reader_shape: tuple[int, ...]
    ) -> Operand:
        if arg_node is not None and arg_node in members:
            source = space[arg_node]
            if reader_space == "row" and source == "full":
                raise Unsupported(f"a per-row value reads the un-reduced {arg_node}")
            if reader_space == "full" and source == "row":
                src = graph.node(arg_node).meta.shape  # type: ignore[union-attr]
                padded = (1,) * (rank - len(src)) + tuple(src)
                if len(src) > rank or any(padded[d] != 1 for d in reduced):
                    raise Unsupported(
                        f"{arg_node} (the reduced value, shape {src}) is broadcast against the "
                        "rows without keepdim: it would not be per row"
                    )
        elif arg_node is not None:
            meta = tensor_meta(graph, arg_node)
            if reader_space == "full":
                terms = broadcast_terms(meta.shape, full, axes)
            else:
                kept = row_shape_of(meta.shape, reader_shape, reduced, rank)
                terms = broadcast_terms(kept, kept_shape, ("row",) * len(kept_shape))
            var = f"{'v' if reader_space == 'full' else 'r'}_{arg_node}"
            loads.setdefault(
                (arg_node, reader_space),
                Load(var, identifier(arg_node), reader_space, terms, meta.dtype),
            )
            return Operand(var=var)
        return operand(arg_node, value, members, "")

    steps = []
    for name in group.nodes:
        node = graph.node(name)
        if name == anchor.name:
            ops = [read(x_name, None, "full", full)]
            for a in anchor.args[1:3] if anchor.kind in ("layer_norm", "rms_norm") else ():
                ops.append(read(a.node, None, "full", full) if a.is_tensor else Operand())
            if len(anchor.args) == 1 and anchor.kind in ("layer_norm", "rms_norm"):
                ops += _module_affine(anchor, full, axes, loads, attr_params)
            steps.append(
                Step(f"v_{name}", anchor.kind, dict(anchor.params), tuple(ops), space[name])
            )
            continue
        shape = node.meta.shape  # type: ignore[union-attr]
        ops = [read(a.node, a.value, space[name], shape) for a in node.args]
        steps.append(Step(f"v_{name}", node.kind, dict(node.params), tuple(ops), space[name]))
    stores = []
    for name in group.outputs:
        meta = tensor_meta(graph, name)
        if space[name] == "full" and meta.shape != full:
            raise Unsupported(f"output {name} of shape {meta.shape} is not per row or per element")
        stores.append(
            Store(f"v_{name}", name, identifier(name), space[name], meta.shape, meta.dtype)
        )
    params = kernel_params(graph, list(group.inputs)) + attr_params
    plan_anchor = next(s for s in steps if s.var == f"v_{anchor.name}")
    offsets = index_terms(full, full, axes)
    return RowPlan(
        group, kernel_title(graph, group), tuple(params), full, rows, cols, reduced, offsets,
        plan_anchor, tuple(loads.values()), tuple(steps), tuple(stores),
        tensor_meta(graph, x_name).dtype,
    )  # fmt: skip


def _module_affine(
    anchor: GraphNode,
    full: tuple[int, ...],
    axes: tuple[Axis, ...],
    loads: dict[tuple[str, Space], Load],
    params: list[KernelParam],
) -> list[Operand]:
    """An nn.LayerNorm/RMSNorm's weight and bias, read from `self.` (attrs): they have the
    normalized shape and, like the module's input, its dtype."""
    dtype = anchor.meta.dtype if anchor.meta else "float32"
    shape = tuple(anchor.params["normalized_shape"])
    operands = []
    for key in ("weight", "bias") if anchor.kind == "layer_norm" else ("weight",):
        path = anchor.attrs.get(key)
        if path is None:
            operands.append(Operand())
            continue
        param = KernelParam(identifier(path), self_expr(path), TensorMeta(shape, dtype))
        params.append(param)
        load = Load(
            f"v_{param.name}", param.name, "full", broadcast_terms(shape, full, axes), dtype
        )
        loads[(param.name, "full")] = load
        operands.append(Operand(var=load.var))
    return operands


def _ancestors(graph: CapturedGraph, name: str, members: set[str]) -> set[str]:
    found: set[str] = set()
    todo = [name]
    while todo:
        for arg in graph.node(todo.pop()).args:
            if arg.node in members and arg.node not in found:
                found.add(arg.node)
                todo.append(arg.node)
    return found


def _descendants(graph: CapturedGraph, group: FusionGroup, name: str) -> set[str]:
    found = {name}
    for member in group.nodes:
        if any(a.node in found for a in graph.node(member).args):
            found.add(member)
    return found - {name}
