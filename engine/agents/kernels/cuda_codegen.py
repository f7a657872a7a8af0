"""CUDA C kernels for fusion groups (backend "cuda"), built by one load_inline call.

Each group becomes `__global__` kernels named after it and a host wrapper
`at::Tensor g0_mul_sigmoid_add(at::Tensor x, ...)` (at::Tensor is torch::Tensor) that checks
every input (device, float32, contiguity, the captured shape) with TORCH_CHECK, allocates the
outputs and launches on the current stream:

- pointwise (and epilogue: the anchor stays an at:: call, the epilogue runs in place on its
  result): a grid-stride loop; with vector 2 or 4 the same-shape operands and outputs move as
  float2/float4 when every such buffer is 16-byte aligned, and a scalar kernel does the tail
  (or everything, when not aligned). Broadcast operands are read at an index computed from
  the element's own, inside one `__device__` per-element function both kernels call;
- reduction (rows = the kept dims, columns = the reduced dims; strided, and so not
  coalesced, when those are not the last): a block per `rows` rows, each row's statistics
  reduced with warp shuffles and 32 floats of shared memory (the rows' pointwise prologue
  recomputed on each pass), then per-row values and a pass writing per-element outputs.
  The schedule's `vector` is not used by row kernels.

`cpp_source` holds the declarations, `cuda_source` the definitions with the headers they
use, torch-free device code first (it compiles with plain nvcc; the per-element functions
are `__host__ __device__` so tests run them on a CPU) and the torch-facing wrapper after.
Several groups concatenate into one translation unit: shared helpers sit behind include
guards. float32 only: other dtypes are left to Triton or torch.
"""

from __future__ import annotations

import math
from typing import Any

from engine.agents.kernels.cuda_source import (
    ANCHOR_HEADERS,
    DEVICE_PRELUDE,
    HOST_PRELUDE,
    Buffers,
    anchor_expr,
    buffer_params,
    check_lines,
    launch_check,
)
from engine.agents.kernels.gpu_exprs import CudaSyntax, row_recipe
from engine.agents.kernels.gpu_lowering import GroupPlan, plan_group
from engine.agents.kernels.gpu_plan import (
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

SYNTAX = CudaSyntax()
IDENTITY = {"sum": "0.0f", "max": "(-INFINITY)", "min": "INFINITY"}
REDUCER = {"sum": "StarkSum()", "max": "StarkMax()", "min": "StarkMin()"}


def supports_cuda(graph: CapturedGraph, group: FusionGroup) -> str | None:
    """None when `generate_cuda` can write the group, else why not."""
    plan = plan_group(graph, group)
    if isinstance(plan, str):
        return plan
    return _cuda_problem(plan)


def _cuda_problem(plan: GroupPlan) -> str | None:
    dtypes = {ld.dtype for ld in plan.loads} | {s.dtype for s in plan.stores}
    if isinstance(plan, RowPlan):
        dtypes.add(plan.input_dtype)
    if dtypes != {"float32"}:
        return f"the CUDA kernels are float32 only (this group has {sorted(dtypes)})"
    anchor = plan.anchor if isinstance(plan, PointwisePlan) else None
    if anchor is not None and anchor.module is not None:
        return f"{anchor.kind}'s stride/padding/dilation/groups were not captured (no at:: call)"
    if anchor is not None and isinstance(anchor.params.get("padding"), str):
        return f"{anchor.kind} with padding={anchor.params['padding']!r}"
    return None


def generate_cuda(
    graph: CapturedGraph, group: FusionGroup, schedule: dict[str, Any] | None = None
) -> GeneratedGroup:
    plan = plan_group(graph, group)
    problem = plan if isinstance(plan, str) else _cuda_problem(plan)
    if problem is not None:
        raise ValueError(f"{group.id} cannot be written in CUDA C: {problem}")
    assert not isinstance(plan, str)
    applied = resolve("cuda", group.kind, schedule)
    if isinstance(plan, RowPlan):
        device_code, launch = row_kernel(plan, applied), row_launch(plan, applied)
    else:
        device_code, launch = pointwise_kernels(plan, applied), pointwise_launch(plan, applied)
    signature = host_signature(plan)
    anchor = plan.anchor if isinstance(plan, PointwisePlan) else None
    headers = ANCHOR_HEADERS[anchor.kind] if anchor else ""
    wrapper = "\n".join([f"{signature} {{", *check_lines(plan), *launch, "}"])
    source = "\n".join([DEVICE_PRELUDE, device_code, HOST_PRELUDE + headers, wrapper]) + "\n"
    declaration = "#include <ATen/core/Tensor.h>\n#include <tuple>\n" + signature + ";\n"
    call = f"_stark_ext.{plan.title}({', '.join(p.call for p in plan.params)})"
    return GeneratedGroup(
        group.id,
        "cuda",
        call,
        tuple(group.outputs),
        functions=(plan.title,),
        cpp_source=declaration,
        cuda_source=source,
        schedule=applied,
    )


def host_signature(plan: GroupPlan) -> str:
    outputs = len(plan.group.outputs)
    result = "at::Tensor" if outputs == 1 else f"std::tuple<{', '.join(['at::Tensor'] * outputs)}>"
    args = ", ".join(f"at::Tensor {p.name}" for p in plan.params)
    return f"{result} {plan.title}({args})"


def _scalar_load(load: Load, pointer: str, names: dict[str, str]) -> str:
    index = names["all"] if load.terms is None else render_index(load.terms, names, "/")
    return f"const float {load.var} = {pointer}[{index}];"


def pointwise_kernels(plan: PointwisePlan, schedule: dict[str, Any]) -> str:
    """The per-element function, the scalar kernel and (vector > 1) the vector kernel."""
    params = buffer_params(plan)
    direct = [ld for ld in plan.loads if ld.terms is None]  # loaded by the kernels
    gathered = [ld for ld in plan.loads if ld.terms is not None]  # indexed in the element
    fn_args = ["int64_t i"] + [f"float {ld.var}" for ld in direct]
    fn_args += [f"const float* __restrict__ {params[ld.tensor]}" for ld in gathered]
    fn_args += [f"float& o_{s.output}" for s in plan.stores]
    summary = " -> ".join(s.kind for s in plan.steps)
    lines = [
        f"// {plan.group.id}: {summary} over {plan.shape}, element i of {plan.numel}",
        f"__host__ __device__ __forceinline__ void {plan.title}_element({', '.join(fn_args)}) {{",
    ]
    names = {"all": "i", "flat": "i"}
    lines += [f"    {_scalar_load(ld, params[ld.tensor], names)}" for ld in gathered]
    lines += [f"    const float {s.var} = {step_expr(SYNTAX, s)};" for s in plan.steps]
    lines += [f"    o_{s.output} = {s.var};" for s in plan.stores]
    lines.append("}")
    kernel_args = ", ".join(params.declarations() + ["int64_t begin", "int64_t n"])
    call_args = ["i"] + [f"{params[ld.tensor]}[i]" for ld in direct]
    call_args += [params[ld.tensor] for ld in gathered] + [f"o_{s.output}" for s in plan.stores]
    lines += [
        "",
        f"__global__ void {plan.title}_kernel({kernel_args}) {{",
        "    const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;",
        "    for (int64_t i = begin + static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;"
        " i < n; i += stride) {",
        *[f"        float o_{s.output};" for s in plan.stores],
        f"        {plan.title}_element({', '.join(call_args)});",
        *[f"        {params[s.target]}[i] = o_{s.output};" for s in plan.stores],
        "    }",
        "}",
    ]
    vector = int(schedule["vector"])
    if vector > 1:
        lines += ["", *_vector_kernel(plan, params, direct, gathered, vector)]
    return "\n".join(lines) + "\n"


def _vector_kernel(plan: PointwisePlan, params: Buffers, direct: list[Load], gathered: list[Load],
                   vector: int) -> list[str]:  # fmt: skip
    kind = f"float{vector}"
    lanes = "xyzw"[:vector]
    args = ", ".join(params.declarations() + ["int64_t n_vec"])
    lines = [
        f"__global__ void {plan.title}_vec{vector}_kernel({args}) {{",
        "    const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;",
        "    for (int64_t v = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;"
        " v < n_vec; v += stride) {",
    ]
    for ld in direct:
        pointer = params[ld.tensor]
        lines.append(
            f"        const {kind} {ld.var}_{vector} = reinterpret_cast<const {kind}*>({pointer})[v];"
        )
    lines += [f"        {kind} o_{s.output};" for s in plan.stores]
    for lane_no, lane in enumerate(lanes):
        call = [f"{vector} * v + {lane_no}"] + [f"{ld.var}_{vector}.{lane}" for ld in direct]
        call += [params[ld.tensor] for ld in gathered] + [
            f"o_{s.output}.{lane}" for s in plan.stores
        ]
        lines.append(f"        {plan.title}_element({', '.join(call)});")
    for s in plan.stores:
        lines.append(f"        reinterpret_cast<{kind}*>({params[s.target]})[v] = o_{s.output};")
    return [*lines, "    }", "}"]


def _grid(work: str, threads: int) -> str:
    return f"stark_grid({work}, {threads})"


def pointwise_launch(plan: PointwisePlan, schedule: dict[str, Any]) -> list[str]:
    threads, vector = int(schedule["threads"]), int(schedule["vector"])
    lines = []
    anchor = plan.anchor
    if anchor is not None:
        lines.append(f"    at::Tensor {anchor.var} = {anchor_expr(anchor)}.contiguous();")
        shape = ", ".join(str(d) for d in anchor.meta.shape)
        lines.append(
            f'    TORCH_CHECK({anchor.var}.sizes().equals({{{shape}}}), "{plan.title}: {anchor.kind} '
            f'gave shape ", {anchor.var}.sizes(), ", the kernel was generated for ({shape})");'
        )
    lines += _allocations(plan)
    args = ", ".join(f"{b}.data_ptr<float>()" for b in plan.buffers)
    lines += [f"    constexpr int64_t n = {plan.numel};", "    int64_t done = 0;"]
    if vector > 1:
        vectored = [ld.tensor for ld in plan.loads if ld.terms is None] + [
            s.target for s in plan.stores
        ]
        aligned = " && ".join(
            f"reinterpret_cast<uintptr_t>({b}.data_ptr()) % 16 == 0"
            for b in dict.fromkeys(vectored)
        )
        lines += [
            f"    if ({aligned}) {{",
            f"        const int64_t n_vec = n / {vector};",
            f"        {plan.title}_vec{vector}_kernel<<<{_grid('n_vec', threads)}, {threads}, 0, stream>>>({args}, n_vec);",
            *launch_check("        "),
            f"        done = n_vec * {vector};",
            "    }",
        ]
    lines += [
        "    if (done < n) {",
        f"        {plan.title}_kernel<<<{_grid('n - done', threads)}, {threads}, 0, stream>>>({args}, done, n);",
        *launch_check("        "),
        "    }",
        _returns(plan),
    ]
    return lines


def _allocations(plan: GroupPlan) -> list[str]:
    like = next(p.name for p in plan.params if p.meta is not None)
    anchor = plan.anchor.var if isinstance(plan, PointwisePlan) and plan.anchor else None
    made = []
    for s in plan.stores:
        if s.target != anchor:
            shape = ", ".join(str(d) for d in s.shape)
            made.append(f"    at::Tensor {s.target} = at::empty({{{shape}}}, {like}.options());")
    return [
        f"    const c10::cuda::CUDAGuard device_guard({like}.device());",
        "    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();",
        *made,
    ]


def _returns(plan: GroupPlan) -> str:
    by_output = {s.output: s.target for s in plan.stores}
    anchor = plan.anchor.var if isinstance(plan, PointwisePlan) and plan.anchor else None
    values = [by_output.get(o) or anchor or o for o in plan.group.outputs]
    if len(values) == 1:
        return f"    return {values[0]};"
    return f"    return std::make_tuple({', '.join(values)});"


def _row_value(plan: RowPlan, step: Step, recipe_value: str | None) -> str:
    if step.var == plan.anchor.var:
        assert recipe_value is not None
        return f"const float {step.var} = {recipe_value};"
    return f"const float {step.var} = {step_expr(SYNTAX, step)};"


def row_kernel(plan: RowPlan, schedule: dict[str, Any]) -> str:
    params = buffer_params(plan)
    ops = [operand_text(SYNTAX, o) if o.var else None for o in plan.anchor.operands]
    x, weight, bias = (ops + [None, None])[:3]
    assert x is not None
    recipe = row_recipe(SYNTAX, plan.anchor.kind, plan.anchor.params, x, plan.cols, weight, bias)
    per_block = int(schedule["rows"])
    args = ", ".join(params.declarations())
    full_names = {"all": "i", "row": "row", "col": "col"}
    row_names = {"all": "row", "row": "row"}
    lines = [
        f"// {plan.group.id}: {plan.anchor.kind} over dims {plan.reduced} of {plan.shape}: "
        f"{plan.rows} rows of {plan.cols}, {per_block} row(s) a block",
        f"__global__ void {plan.title}_kernel({args}) {{",
        "    __shared__ float scratch[32];",
        f"    for (int r = 0; r < {per_block}; ++r) {{",
        f"        const int64_t row = static_cast<int64_t>(blockIdx.x) * {per_block} + r;",
        f"        if (row >= {plan.rows}) return;  // the same for every thread of the block",
    ]

    def col_loop(wanted: set[str]) -> list[str]:
        loads, steps = plan.needed(wanted, "full")
        return [
            f"        for (int64_t col = threadIdx.x; col < {plan.cols}; col += blockDim.x) {{",
            f"            const int64_t i = {render_index(plan.offsets, full_names, '/')};",
            *[f"            {_scalar_load(ld, params[ld.tensor], full_names)}" for ld in loads],
            *[f"            {_row_value(plan, s, recipe.element_value)}" for s in steps],
        ]

    for stat in recipe.stats:
        lines.append(f"        float acc_{stat.var} = {IDENTITY[stat.combine]};")
        lines += col_loop({x})
        if stat.combine == "sum":
            lines.append(f"            acc_{stat.var} += {stat.element};")
        else:
            merge = SYNTAX.maximum if stat.combine == "max" else SYNTAX.minimum
            lines.append(f"            acc_{stat.var} = {merge(f'acc_{stat.var}', stat.element)};")
        lines.append("        }")
        total = f"stark_block_reduce(acc_{stat.var}, scratch, {REDUCER[stat.combine]})"
        lines.append(f"        const float {stat.var} = {stat.finish.replace('{total}', total)};")
    row_steps = [s for s in plan.steps if s.space == "row"]
    row_loads, _ = plan.needed({s.var for s in row_steps}, "row")
    lines += [f"        {_scalar_load(ld, params[ld.tensor], row_names)}" for ld in row_loads]
    lines += [f"        {_row_value(plan, s, recipe.row_value)}" for s in row_steps]
    row_stores = [s for s in plan.stores if s.space == "row"]
    if row_stores:
        lines.append("        if (threadIdx.x == 0) {")
        lines += [f"            {params[s.target]}[row] = {s.var};" for s in row_stores]
        lines.append("        }")
    full_stores = [s for s in plan.stores if s.space == "full"]
    if full_stores:
        lines += col_loop({s.var for s in full_stores})
        lines += [f"            {params[s.target]}[i] = {s.var};" for s in full_stores]
        lines.append("        }")
    return "\n".join([*lines, "    }", "}"]) + "\n"


def row_launch(plan: RowPlan, schedule: dict[str, Any]) -> list[str]:
    threads, per_block = int(schedule["threads"]), int(schedule["rows"])
    blocks = math.ceil(plan.rows / per_block)
    args = ", ".join(f"{b}.data_ptr<float>()" for b in plan.buffers)
    return [
        *_allocations(plan),
        f"    {plan.title}_kernel<<<{blocks}, {threads}, 0, stream>>>({args});",
        *launch_check("    "),
        _returns(plan),
    ]
