"""Triton kernels for fusion groups (backend "triton").

Each group becomes one readable `@triton.jit` kernel named after it (`g0_mul_sigmoid_add_kernel`)
and a launch function (`g0_launch`) that checks its inputs against the captured shapes and
dtypes, allocates the outputs and launches with the schedule's BLOCK / num_warps / ROWS:

- pointwise: one masked pass over the flat output, BLOCK elements per program; broadcast
  operands are read at an index computed from the element's own;
- epilogue: the anchor (linear, matmul, conv ...) stays a torch call in the launcher, then
  the pointwise epilogue runs as one pass in place on its fresh result;
- reduction (rows = the kept dims, columns = the reduced dims; strided when those are not
  the last): ROWS rows per program, the row walked in tiles of BLOCK columns: a pass per
  statistic (max then sum of exp for softmax; mean then variance for layer_norm),
  recomputing the pointwise prologue from the loads, per-row values and stores, then a
  pass that writes the per-element outputs. Accumulators are float32 whatever the dtype.

`python_source` starts with its own imports so it runs when pasted on its own; `call` reads
the group's inputs by node name and parameters from `self.`.
"""

from __future__ import annotations

import math
from typing import Any

from engine.agents.kernels.gpu_exprs import TritonSyntax, row_recipe
from engine.agents.kernels.gpu_lowering import plan_group
from engine.agents.kernels.gpu_plan import (
    AnchorCall,
    Load,
    PointwisePlan,
    RowPlan,
    Step,
    operand_text,
    render_index,
    step_expr,
)
from engine.agents.kernels.ir import CapturedGraph, FusionGroup, GeneratedGroup
from engine.agents.kernels.schedule import resolve

SYNTAX = TritonSyntax()
INT32_LIMIT = 2**31 - 1
PRELUDE = '''import os

import torch
import triton
import triton.language as tl

_STARK_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def _stark_check(group, name, tensor, shape=None, dtype=None, device=None, contiguous=True):
    """A clear error for an input the generated kernel was not specialised for."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{group}: {name} must be a tensor, got {type(tensor).__name__}")
    if not (tensor.is_cuda or _STARK_INTERPRETED):
        raise ValueError(f"{group}: {name} is on {tensor.device}; Triton kernels need CUDA tensors")
    if device is not None and tensor.device != device:
        raise ValueError(f"{group}: {name} is on {tensor.device}, the other inputs on {device}")
    if shape is not None and tuple(tensor.shape) != shape:
        raise ValueError(
            f"{group}: {name} has shape {tuple(tensor.shape)}; the kernel was generated for {shape}"
        )
    if dtype is not None and tensor.dtype != dtype:
        raise ValueError(f"{group}: {name} is {tensor.dtype}; the kernel was generated for {dtype}")
    if contiguous and not tensor.is_contiguous():
        raise ValueError(f"{group}: {name} must be contiguous")
'''
_ANCHOR_FUNCTIONS = {
    "linear": "torch.nn.functional.linear",
    "matmul": "torch.matmul",
    "mm": "torch.mm",
    "bmm": "torch.bmm",
    "addmm": "torch.addmm",
}
_CONV_KEYS = {
    "conv": ("stride", "padding", "dilation", "groups"),
    "conv_transpose": ("stride", "padding", "output_padding", "groups", "dilation"),
}


def supports_triton(graph: CapturedGraph, group: FusionGroup) -> str | None:
    """None when `generate_triton` can write the group, else why not."""
    plan = plan_group(graph, group)
    return plan if isinstance(plan, str) else None


def generate_triton(
    graph: CapturedGraph, group: FusionGroup, schedule: dict[str, Any] | None = None
) -> GeneratedGroup:
    plan = plan_group(graph, group)
    if isinstance(plan, str):
        raise ValueError(f"{group.id} cannot be written in Triton: {plan}")
    applied = resolve("triton", group.kind, schedule)
    if isinstance(plan, RowPlan):
        kernel, launch = row_kernel(plan), row_launch(plan, applied)
    else:
        kernel, launch = pointwise_kernel(plan), pointwise_launch(plan, applied)
    helpers = [text for name, text in TritonSyntax.HELPERS.items() if f"_stark_{name}(" in kernel]
    source = "\n\n".join([PRELUDE, *helpers, kernel, launch])
    call = f"{group.id}_launch({', '.join(p.call for p in plan.params)})"
    return GeneratedGroup(
        group.id, "triton", call, tuple(group.outputs), python_source=source, schedule=applied
    )


def _dtype(name: str) -> str:
    return f"torch.{name}"


def _load(load: Load, names: dict[str, str], masks: dict[str, str]) -> str:
    pointer = f"{load.tensor}_ptr"
    if load.terms == ():
        return f"{load.var} = tl.load({pointer}).to(tl.float32)"
    if load.terms is None:
        index, mask = names["all"], masks["all"]
    else:
        axes = {t.axis for t in load.terms}
        index = render_index(load.terms, names, "//")
        mask = masks["all"] if len(axes) > 1 else masks[next(iter(axes))]
    return f"{load.var} = tl.load({pointer} + {index}, mask={mask}, other=0.0).to(tl.float32)"


def _signature(name: str, buffers: tuple[str, ...], extra: list[str]) -> list[str]:
    args = ", ".join([f"{b}_ptr" for b in buffers] + extra)
    return ["@triton.jit", f"def {name}_kernel({args}):"]


def pointwise_kernel(plan: PointwisePlan) -> str:
    lines = _signature(plan.title, plan.buffers, ["n_elements", "BLOCK: tl.constexpr"])
    summary = " -> ".join(s.kind for s in plan.steps)
    lines.append(f"    # {plan.group.id}: {summary} over {plan.shape}, BLOCK elements a program")
    pid = "tl.program_id(0)" + (".to(tl.int64)" if plan.numel > INT32_LIMIT else "")
    lines += [
        f"    offs = {pid} * BLOCK + tl.arange(0, BLOCK)",
        "    mask = offs < n_elements",
    ]
    names = {"all": "offs", "flat": "offs"}
    masks = {"all": "mask", "flat": "mask"}
    lines += [f"    {_load(ld, names, masks)}" for ld in plan.loads]
    lines += [f"    {s.var} = {step_expr(SYNTAX, s)}" for s in plan.steps]
    lines += [f"    tl.store({s.target}_ptr + offs, {s.var}, mask=mask)" for s in plan.stores]
    return "\n".join(lines) + "\n"


def anchor_expr(anchor: AnchorCall) -> str:
    args = [name or "None" for name in anchor.operands]
    if anchor.module is not None:
        return f"{anchor.module}({args[0]})"
    if anchor.kind.startswith("conv"):
        family = "conv_transpose" if "transpose" in anchor.kind else "conv"
        keywords = [f"{k}={anchor.params[k]!r}" for k in _CONV_KEYS[family] if k in anchor.params]
        return f"torch.nn.functional.{anchor.kind}({', '.join(args + keywords)})"
    keywords = []
    if anchor.kind == "addmm":
        keywords = [f"{k}={anchor.params[k]!r}" for k in ("beta", "alpha") if k in anchor.params]
    return f"{_ANCHOR_FUNCTIONS[anchor.kind]}({', '.join(args + keywords)})"


def _checks(plan: PointwisePlan | RowPlan) -> list[str]:
    """One _stark_check per tensor input: shape and dtype where captured, one device, and
    contiguity for those the kernel reads (the anchor's torch call takes any layout)."""
    read = set(plan.buffers)
    lines = []
    first = None
    for param in plan.params:
        if param.module:
            continue
        args = [f'"{plan.group.id}"', f'"{param.name}"', param.name]
        if param.meta is not None:
            args += [repr(tuple(param.meta.shape)), _dtype(param.meta.dtype)]
        if first is not None:
            args.append(f"device={first}.device")
        if param.name not in read:
            args.append("contiguous=False")
        lines.append(f"    _stark_check({', '.join(args)})")
        first = first or param.name
    return lines


def _launch_head(plan: PointwisePlan | RowPlan, what: str) -> list[str]:
    names = ", ".join(p.name for p in plan.params)
    return [
        f"def {plan.group.id}_launch({names}):",
        f'    """{plan.group.id} ({plan.group.summary or plan.title}): {what}."""',
        *_checks(plan),
    ]


def _allocations(plan: PointwisePlan | RowPlan, device_of: str) -> list[str]:
    made = []
    for store in plan.stores:
        if plan_anchor_var(plan) == store.target:
            continue
        made.append(
            f"    {store.target} = torch.empty({tuple(store.shape)!r}, device={device_of}.device, "
            f"dtype={_dtype(store.dtype)})"
        )
    return made


def plan_anchor_var(plan: PointwisePlan | RowPlan) -> str | None:
    return plan.anchor.var if isinstance(plan, PointwisePlan) and plan.anchor else None


def _returns(plan: PointwisePlan | RowPlan) -> str:
    by_output = {s.output: s.target for s in plan.stores}
    anchor = plan.anchor if isinstance(plan, PointwisePlan) else None
    values = [by_output.get(o) or (anchor.var if anchor else o) for o in plan.group.outputs]
    return f"    return {values[0]}" if len(values) == 1 else f"    return {', '.join(values)}"


def pointwise_launch(plan: PointwisePlan, schedule: dict[str, Any]) -> str:
    anchor = plan.anchor
    what = "one Triton pass" + (f" in place after {anchor.kind}" if anchor else "")
    lines = _launch_head(plan, what)
    device_of = plan.params[0].name
    if anchor is not None:
        lines.append(f"    {anchor.var} = {anchor_expr(anchor)}.contiguous()")
        args = [f'"{plan.group.id}"', f'"{anchor.var}"', anchor.var, repr(tuple(anchor.meta.shape))]
        lines.append(f"    _stark_check({', '.join(args)}, {_dtype(anchor.meta.dtype)})")
        device_of = anchor.var
    lines += _allocations(plan, device_of)
    block, warps = schedule["block"], schedule["num_warps"]
    lines += [
        f"    grid = (triton.cdiv({plan.numel}, {block}),)",
        f"    {plan.title}_kernel[grid]({', '.join(plan.buffers)}, {plan.numel}, "
        f"BLOCK={block}, num_warps={warps})",
        _returns(plan),
    ]
    return "\n".join(lines) + "\n"


def row_tile(plan: RowPlan, schedule: dict[str, Any]) -> int:
    """The column tile: the schedule's block, or the whole row when it is narrower."""
    return min(int(schedule["block"]), 1 << max(0, math.ceil(math.log2(plan.cols))))


def _row_step(plan: RowPlan, step: Step, recipe_value: str | None) -> str:
    if step.var == plan.anchor.var:
        assert recipe_value is not None
        return f"{step.var} = {recipe_value}"
    return f"{step.var} = {step_expr(SYNTAX, step)}"


def row_kernel(plan: RowPlan) -> str:
    ops = [operand_text(SYNTAX, o) if o.var else None for o in plan.anchor.operands]
    x, weight, bias = (ops + [None, None])[:3]
    assert x is not None
    recipe = row_recipe(SYNTAX, plan.anchor.kind, plan.anchor.params, x, plan.cols, weight, bias)
    lines = _signature(
        plan.title, plan.buffers, ["n_rows", "ROWS: tl.constexpr", "BLOCK: tl.constexpr"]
    )
    lines.append(
        f"    # {plan.group.id}: {plan.anchor.kind} over dims {plan.reduced} of {plan.shape}: "
        f"{plan.rows} rows of {plan.cols}, ROWS rows a program, BLOCK columns a tile"
    )
    wide = plan.rows * plan.cols > INT32_LIMIT
    rows = "tl.program_id(0) * ROWS + tl.arange(0, ROWS)[:, None]"
    lines += [
        f"    rows = ({rows}).to(tl.int64)" if wide else f"    rows = {rows}",
        "    row_mask = rows < n_rows",
    ]
    names = {"all": "offs", "row": "rows", "col": "cols"}
    masks = {"all": "mask", "row": "row_mask", "col": "col_mask"}
    row_names, row_masks = {"all": "rows", "row": "rows"}, {"all": "row_mask", "row": "row_mask"}

    def tile_loop(wanted: set[str]) -> list[str]:
        loads, steps = plan.needed(wanted, "full")
        body = [
            f"    for start in range(0, {plan.cols}, BLOCK):",
            "        cols = start + tl.arange(0, BLOCK)[None, :]",
            f"        col_mask = cols < {plan.cols}",
            "        mask = row_mask & col_mask",
            f"        offs = {render_index(plan.offsets, names, '//')}",
        ]
        body += [f"        {_load(ld, names, masks)}" for ld in loads]
        body += [f"        {_row_step(plan, s, recipe.element_value)}" for s in steps]
        return body

    identity = {"sum": "0.0", "max": SYNTAX.lit(-math.inf), "min": SYNTAX.lit(math.inf)}
    for number, stat in enumerate(recipe.stats, 1):
        lines.append(f"    # pass {number}: {stat.var} ({stat.combine} over the row)")
        lines.append(f"    acc = tl.full([ROWS, BLOCK], {identity[stat.combine]}, tl.float32)")
        lines += tile_loop({x})
        element = f"tl.where(mask, {stat.element}, {identity[stat.combine]})"
        if stat.combine == "sum":
            lines.append(f"        acc += {element}")
        else:
            lines.append(
                f"        acc = {SYNTAX.maximum('acc', element) if stat.combine == 'max' else SYNTAX.minimum('acc', element)}"
            )
        total = f"tl.{stat.combine}(acc, axis=1, keep_dims=True)"
        lines.append(f"    {stat.var} = {stat.finish.replace('{total}', total)}")
    row_steps = [s for s in plan.steps if s.space == "row"]
    row_loads, _ = plan.needed({s.var for s in row_steps}, "row")
    lines += [f"    {_load(ld, row_names, row_masks)}" for ld in row_loads]
    lines += [f"    {_row_step(plan, s, recipe.row_value)}" for s in row_steps]
    lines += [
        f"    tl.store({s.target}_ptr + rows, {s.var}, mask=row_mask)"
        for s in plan.stores
        if s.space == "row"
    ]
    full_stores = [s for s in plan.stores if s.space == "full"]
    if full_stores:
        lines.append("    # last pass: the per-element outputs")
        lines += tile_loop({s.var for s in full_stores})
        lines += [
            f"        tl.store({s.target}_ptr + offs, {s.var}, mask=mask)" for s in full_stores
        ]
    return "\n".join(lines) + "\n"


def row_launch(plan: RowPlan, schedule: dict[str, Any]) -> str:
    rows_per_program, warps = schedule["rows"], schedule["num_warps"]
    block = row_tile(plan, schedule)
    lines = _launch_head(
        plan, f"{plan.rows} rows of {plan.cols}, one Triton program per {rows_per_program}"
    )
    lines += _allocations(plan, plan.params[0].name)
    lines += [
        f"    grid = (triton.cdiv({plan.rows}, {rows_per_program}),)",
        f"    {plan.title}_kernel[grid]({', '.join(plan.buffers)}, {plan.rows}, "
        f"ROWS={rows_per_program}, BLOCK={block}, num_warps={warps})",
        _returns(plan),
    ]
    return "\n".join(lines) + "\n"
