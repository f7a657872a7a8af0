"""One pointwise node as a C++ expression, for a `float` or a `stark::Vec` of floats.

The operators are the templates of `cpp_prelude` (one formula serves both the vector and
the scalar loops), so an expression here is a call such as `stark::softplus(x, 1.0f,
20.0f)`; a scalar operand is a float literal, wrapped as `Vec(...)` in vector code.
"""

from __future__ import annotations

from typing import Any

from engine.agents.kernels.cpp_text import float_literal
from engine.agents.kernels.ir import BINARY_POINTWISE, UNARY_POINTWISE, GraphNode

# Unary operators that are a prelude function of the same name.
_PLAIN = frozenset(
    [
        "neg",
        "abs",
        "exp",
        "log",
        "log1p",
        "sqrt",
        "rsqrt",
        "reciprocal",
        "erf",
        "sin",
        "cos",
        "tanh",
        "relu",
        "sigmoid",
        "silu",
        "mish",
        "softsign",
        "hardsigmoid",
        "hardswish",
    ]
)
_BINARY = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
# torch.pow's exact special cases (pow_tensor_scalar_optimized_kernel)
_POW_SPECIAL = {
    2.0: "({a} * {a})",
    3.0: "({a} * {a} * {a})",
    0.5: "stark::sqrt({a})",
    -0.5: "stark::rsqrt({a})",
    -1.0: "stark::reciprocal({a})",
    -2.0: "stark::reciprocal({a} * {a})",
    1.0: "{a}",
}


def pointwise_reason(node: GraphNode) -> str | None:
    """Why `node` has no C++ expression, or None when it has one."""
    if node.kind not in UNARY_POINTWISE and node.kind not in BINARY_POINTWISE:
        return f"op '{node.kind}' ({node.name}) has no C++ template"
    tensors = [a for a in node.args if a.is_tensor]
    if not tensors:
        return f"{node.name} ({node.kind}) reads no tensor"
    if node.kind in BINARY_POINTWISE:
        if len(node.args) != 2:
            return f"{node.name} ({node.kind}) has {len(node.args)} operands, not 2"
        for arg in node.args:
            if not arg.is_tensor and not _is_number(arg.value):
                return f"{node.name} ({node.kind}) has a non-numeric operand {arg.value!r}"
        return None
    if not node.args[0].is_tensor or len(tensors) != 1:
        return f"{node.name} ({node.kind}) must apply to one tensor"
    if node.kind == "pow" and not _is_number(node.params.get("exponent")):
        return f"{node.name} (pow) has no numeric exponent"
    if node.kind == "celu" and node.params.get("alpha") == 0:
        return f"{node.name} (celu) has alpha=0"
    for key, value in _numeric_params(node).items():
        if value is not None and not _is_number(value):
            return f"{node.name} ({node.kind}) has a non-numeric {key}={value!r}"
    if node.kind == "gelu" and node.params.get("approximate", "none") not in ("none", "tanh"):
        return f"gelu approximate={node.params.get('approximate')!r} is not 'none' or 'tanh'"
    return None


def scalar_operand(value: Any, vec: bool) -> str:
    literal = float_literal(value)
    return f"Vec({literal})" if vec else literal


def op_expression(node: GraphNode, operands: list[str], vec: bool) -> str:
    """The C++ expression of `node` over its operands' expressions (in `node.args` order)."""
    kind, params = node.kind, node.params

    def const(value: Any) -> str:
        return scalar_operand(value, vec)

    def num(key: str, default: float) -> str:
        value = params.get(key)
        return float_literal(default if value is None else value)

    if kind in _BINARY:
        return f"({operands[0]} {_BINARY[kind]} {operands[1]})"
    if kind in ("maximum", "minimum"):
        return f"stark::{kind}({operands[0]}, {operands[1]})"
    a = operands[0]
    if kind in _PLAIN:
        return f"stark::{kind}({a})"
    if kind == "identity":
        return a
    if kind == "square":
        return f"({a} * {a})"
    if kind == "gelu":
        return (
            f"stark::gelu_tanh({a})" if params.get("approximate") == "tanh" else f"stark::gelu({a})"
        )
    if kind == "softplus":
        return f"stark::softplus({a}, {num('beta', 1.0)}, {num('threshold', 20.0)})"
    if kind == "elu":
        return f"stark::elu({a}, {num('alpha', 1.0)}, 1.0f, 1.0f)"
    if kind == "selu":
        return f"stark::elu({a}, {float_literal(SELU_ALPHA)}, {float_literal(SELU_SCALE)}, 1.0f)"
    if kind == "celu":
        alpha = float(params.get("alpha", 1.0) or 1.0)
        return f"stark::elu({a}, {float_literal(alpha)}, 1.0f, {float_literal(1.0 / alpha)})"
    if kind == "leaky_relu":
        return f"stark::leaky_relu({a}, {num('negative_slope', 0.01)})"
    if kind in ("hardtanh", "clamp"):
        low_key, high_key = ("min_val", "max_val") if kind == "hardtanh" else ("min", "max")
        default_low, default_high = (-1.0, 1.0) if kind == "hardtanh" else (None, None)
        low = params.get(low_key, default_low)
        high = params.get(high_key, default_high)
        expression = a
        if low is not None:
            expression = f"stark::maximum({expression}, {const(low)})"
        if high is not None:
            expression = f"stark::minimum({expression}, {const(high)})"
        return expression
    if kind == "pow":
        exponent = float(params.get("exponent", 1.0))
        if exponent == 0.0:
            return const(1.0)
        if exponent in _POW_SPECIAL:
            return _POW_SPECIAL[exponent].format(a=a)
        return f"stark::pow({a}, {float_literal(exponent)})"
    raise ValueError(f"op '{kind}' has no C++ template")


def _numeric_params(node: GraphNode) -> dict[str, Any]:
    keys = {
        "softplus": ("beta", "threshold"),
        "elu": ("alpha",),
        "celu": ("alpha",),
        "leaky_relu": ("negative_slope",),
        "hardtanh": ("min_val", "max_val"),
        "clamp": ("min", "max"),
        "pow": ("exponent",),
    }.get(node.kind, ())
    return {k: node.params.get(k) for k in keys}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, complex)
