"""Epilogue groups: a matmul/conv anchor kept as its ATen call, then the pointwise ops after
it applied in one pass over its output, in place when nothing else reads the anchor.

The anchor's operands are graph values or, for a call_module node, the module's own
parameters (`GraphNode.attrs`, e.g. `self.gemm.weight`), passed in as tensors so the
weights stay the reference's.
"""

from __future__ import annotations

from typing import Any

from engine.agents.kernels.cpp_function import KernelFunction, UnsupportedGroup
from engine.agents.kernels.cpp_text import shape_literal
from engine.agents.kernels.ir import GraphNode

# operand roles in `GraphNode.args` order; the optional ones may be None or absent
_ROLES: dict[str, tuple[str, ...]] = {
    "linear": ("input", "weight", "bias"),
    "matmul": ("input", "other"),
    "mm": ("input", "mat2"),
    "bmm": ("input", "mat2"),
    "addmm": ("input", "mat1", "mat2"),
    **{f"conv{d}d": ("input", "weight", "bias") for d in (1, 2, 3)},
    **{f"conv_transpose{d}d": ("input", "weight", "bias") for d in (1, 2, 3)},
}
_OPTIONAL = frozenset({"bias"})
ANCHOR_KINDS = frozenset(_ROLES)


def anchor_operands(node: GraphNode) -> list[tuple[str, str, str] | None]:
    """Per role: ("node", graph value) or ("attr", `self....`), None for an absent bias.
    An UnsupportedGroup when a required operand is missing or a constant."""
    if node.kind not in _ROLES:
        raise UnsupportedGroup(f"anchor '{node.kind}' ({node.name}) has no ATen call here")
    found: list[tuple[str, str, str] | None] = []
    for index, role in enumerate(_ROLES[node.kind]):
        arg = node.args[index] if index < len(node.args) else None
        if arg is not None and arg.is_tensor:
            found.append(("node", str(arg.node), role))
        elif node.attrs.get(role):
            found.append(("attr", node.attrs[role], role))
        elif role in _OPTIONAL and (arg is None or arg.value is None):
            found.append(None)
        else:
            raise UnsupportedGroup(f"{node.name} ({node.kind}) has no tensor for its {role}")
    if node.kind.startswith("conv") and node.params.get("padding_mode", "zeros") != "zeros":
        raise UnsupportedGroup(
            f"{node.name} uses padding_mode={node.params['padding_mode']!r} (only 'zeros')"
        )
    return found


def emit_anchor(fn: KernelFunction, node: GraphNode) -> str:
    """Write the anchor's ATen call; the C++ tensor variable holding its contiguous output."""
    if node.meta is None:
        raise UnsupportedGroup(f"the anchor {node.name} has no recorded shape")
    operands = []
    for entry in anchor_operands(node):
        if entry is None:
            operands.append("{}")
        elif entry[0] == "node":
            operands.append(fn.input(entry[1]).cpp)
        else:
            operands.append(fn.attribute(entry[1], f"{node.name}_{entry[2]}").cpp)
    fn.includes += [f"ATen/ops/{node.kind}.h", "ATen/core/grad_mode.h"]
    tensor = fn.namer.get(node.name, "out")
    body = fn.body
    body.line(
        "at::NoGradGuard no_grad;  // forward only: the epilogue rewrites the anchor's output"
    )
    body.line(f"at::Tensor {tensor} = {_call(node, operands)}.contiguous();")
    body.line(
        f'stark::check_input({tensor}, "{fn.name}", "the output of {node.name}", '
        f"{shape_literal(node.meta.shape)});"
    )
    return tensor


def _call(node: GraphNode, operands: list[str]) -> str:
    kind, params = node.kind, node.params
    if kind == "linear":
        bias = [] if operands[2] == "{}" else [operands[2]]
        return f"at::linear({', '.join(operands[:2] + bias)})"
    if kind in ("matmul", "mm", "bmm"):
        return f"at::{kind}({operands[0]}, {operands[1]})"
    if kind == "addmm":
        beta, alpha = params.get("beta", 1), params.get("alpha", 1)
        return f"at::addmm({', '.join(operands)}, {_scalar(beta)}, {_scalar(alpha)})"
    spatial = int(kind[-2])
    stride = _ints(params.get("stride", 1), spatial)
    dilation = _ints(params.get("dilation", 1), spatial)
    groups = int(params.get("groups", 1))
    if kind.startswith("conv_transpose"):
        padding = _ints(params.get("padding", 0), spatial)
        output_padding = _ints(params.get("output_padding", 0), spatial)
        return (
            f"at::{kind}({', '.join(operands)}, {stride}, {padding}, {output_padding}, "
            f"{groups}, {dilation})"
        )
    raw_padding = params.get("padding", 0)
    padding = f'"{raw_padding}"' if isinstance(raw_padding, str) else _ints(raw_padding, spatial)
    return f"at::{kind}({', '.join(operands)}, {stride}, {padding}, {dilation}, {groups})"


def anchor_reason(node: GraphNode) -> str | None:
    try:
        anchor_operands(node)
        if node.kind.startswith("conv"):
            spatial = int(node.kind[-2])
            for key in ("stride", "dilation", "output_padding"):
                _ints(node.params.get(key, 1), spatial)
            padding = node.params.get("padding", 0)
            if isinstance(padding, str):
                if padding not in ("same", "valid") or "transpose" in node.kind:
                    return f"{node.name} has padding={padding!r}"
            else:
                _ints(padding, spatial)
    except UnsupportedGroup as exc:
        return str(exc)
    except (TypeError, ValueError) as exc:
        return f"{node.name} ({node.kind}) has parameters the C++ call cannot take: {exc}"
    if node.meta is None:
        return f"the anchor {node.name} has no recorded shape"
    return None


def _ints(value: Any, spatial: int) -> str:
    values = [int(value)] * spatial if isinstance(value, int) else [int(v) for v in value]
    if len(values) not in (1, spatial):
        raise ValueError(f"{values} for {spatial} spatial dims")
    return f"at::IntArrayRef{{{', '.join(str(v) for v in values)}}}"


def _scalar(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UnsupportedGroup(f"addmm scalar {value!r} is not a number")
    return repr(float(value)) if isinstance(value, float) else str(value)
