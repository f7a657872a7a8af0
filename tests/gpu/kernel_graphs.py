"""Hand-made captured graphs and fusion groups for the GPU code generators' tests.

Built here, not by the capture, so these tests pin the generators alone: each case holds a
graph literal, its groups, the module parameters the generated `call` reads from `self.`,
and the torch function the group must agree with. Nothing here imports torch at import time
except through `Case.reference` and `Case.inputs`, which the tests call.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.agents.kernels.ir import (
    BINARY_POINTWISE,
    REDUCTIONS,
    UNARY_POINTWISE,
    Arg,
    CapturedGraph,
    FusionGroup,
    GraphNode,
    TensorMeta,
)


def self_with(params: dict[str, Any]) -> types.SimpleNamespace:
    """A stand-in for the module's `self`: dotted names (`gemm.weight`) become attributes."""
    root = types.SimpleNamespace()
    for dotted, value in params.items():
        holder = root
        *parents, leaf = dotted.split(".")
        for part in parents:
            if not hasattr(holder, part):
                setattr(holder, part, types.SimpleNamespace())
            holder = getattr(holder, part)
        setattr(holder, leaf, value)
    return root


def op_class(kind: str) -> str:
    if kind in UNARY_POINTWISE or kind in BINARY_POINTWISE:
        return "pointwise"
    if kind in REDUCTIONS:
        return "reduction"
    if kind in ("linear", "matmul", "mm", "bmm", "addmm"):
        return "matmul"
    return "conv" if kind.startswith("conv") else "other"


def to_arg(value: Any) -> Arg:
    return Arg(node=value) if isinstance(value, str) else Arg(value=value)


@dataclass(slots=True)
class GraphBuilder:
    nodes: list[GraphNode] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)

    def input(self, name: str, shape: tuple[int, ...], dtype: str = "float32") -> str:
        self.nodes.append(
            GraphNode(name, "placeholder", "input", "input", meta=TensorMeta(shape, dtype))
        )
        self.inputs.append(name)
        return name

    def param(self, name: str, shape: tuple[int, ...]) -> str:
        meta = TensorMeta(shape, "float32")
        self.nodes.append(
            GraphNode(name, "get_attr", "param", "input", meta=meta, target=f"self.{name}")
        )
        return name

    def op(self, name: str, kind: str, *args: Any, shape: tuple[int, ...], **options: Any) -> str:
        dtype = options.pop("dtype", "float32")
        attrs = options.pop("attrs", {})
        target = options.pop("target", "")
        op = "call_module" if attrs else "call_function"
        node = GraphNode(name, op, kind, op_class(kind), tuple(to_arg(a) for a in args),  # type: ignore[arg-type]
                         dict(options), TensorMeta(shape, dtype), target=target,
                         attrs=attrs)  # fmt: skip
        self.nodes.append(node)
        return name

    def graph(self, *outputs: str) -> CapturedGraph:
        text = f"return ({', '.join(outputs)},)"
        return CapturedGraph(tuple(self.nodes), tuple(self.inputs), text, tuple(outputs))


def make_group(
    graph: CapturedGraph, gid: str, kind: str, nodes: list[str], anchor: str | None = None
) -> FusionGroup:
    """A group over `nodes`, its inputs and outputs read off the graph."""
    members = set(nodes)
    inputs: list[str] = []
    for name in nodes:
        for arg in graph.node(name).args:
            if arg.node and arg.node not in members and arg.node not in inputs:
                inputs.append(arg.node)
    outputs = [
        n for n in nodes if n in graph.outputs or any(u.name not in members for u in graph.users(n))
    ]
    summary = " -> ".join(graph.node(n).kind for n in nodes)
    return FusionGroup(gid, kind, tuple(nodes), tuple(inputs), tuple(outputs), anchor, summary)


@dataclass(slots=True)
class Case:
    name: str
    graph: CapturedGraph
    group: FusionGroup
    params: dict[str, tuple[int, ...]]  # self.<name> -> shape
    reference: Callable[..., Any]  # (inputs by name, params by name) -> expected output(s)

    def inputs(self, seed: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
        import torch

        generator = torch.Generator().manual_seed(seed)
        feeds = {
            n: torch.randn(self.graph.node(n).meta.shape, generator=generator)  # type: ignore[union-attr]
            for n in self.graph.inputs
        }
        params = {n: torch.randn(s, generator=generator) for n, s in self.params.items()}
        return feeds, params


def pointwise_bias_case(shape: tuple[int, int, int, int] = (2, 3, 5, 7)) -> Case:
    """mul -> gelu(tanh) -> add a (C, 1, 1) bias -> mul a (W,) scale -> sub from 1, on NCHW."""
    b = GraphBuilder()
    n, c, h, w = shape
    x = b.input("x", shape)
    bias, scale = b.param("bias", (c, 1, 1)), b.param("scale", (w,))
    m = b.op("mul", "mul", x, 2.0, shape=shape)
    g = b.op("gelu", "gelu", m, shape=shape, approximate="tanh")
    a = b.op("add", "add", g, bias, shape=shape)
    scaled = b.op("mul_1", "mul", a, scale, shape=shape)
    out = b.op("rsub", "sub", 1.0, scaled, shape=shape)
    graph = b.graph(out)
    group = make_group(graph, "g0", "pointwise", [m, g, a, scaled, out])

    def reference(f: dict[str, Any], p: dict[str, Any]) -> Any:
        import torch

        gelu = torch.nn.functional.gelu(f["x"] * 2.0, approximate="tanh")
        return 1.0 - (gelu + p["bias"]) * p["scale"]

    params = {"bias": (c, 1, 1), "scale": (w,)}
    return Case(f"pointwise_bias_{numel(shape)}", graph, group, params, reference)


def formula_table() -> list[tuple[str, dict[str, Any], Callable[[Any], Any]]]:
    """Every unary pointwise kind (with parameter variants) and its torch function."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    return [
        ("neg", {}, torch.neg), ("abs", {}, torch.abs), ("relu", {}, torch.relu),
        ("sigmoid", {}, torch.sigmoid), ("tanh", {}, torch.tanh), ("exp", {}, torch.exp),
        ("log", {}, torch.log), ("log1p", {}, torch.log1p), ("sqrt", {}, torch.sqrt),
        ("rsqrt", {}, torch.rsqrt), ("reciprocal", {}, torch.reciprocal), ("erf", {}, torch.erf),
        ("sin", {}, torch.sin), ("cos", {}, torch.cos), ("square", {}, torch.square),
        ("gelu", {"approximate": "none"}, F.gelu),
        ("gelu", {"approximate": "tanh"}, lambda x: F.gelu(x, approximate="tanh")),
        ("silu", {}, F.silu), ("mish", {}, F.mish), ("softsign", {}, F.softsign),
        ("selu", {}, F.selu), ("hardsigmoid", {}, F.hardsigmoid), ("hardswish", {}, F.hardswish),
        ("softplus", {"beta": 1.0, "threshold": 20.0}, F.softplus),
        ("softplus", {"beta": 2.0, "threshold": 5.0}, lambda x: F.softplus(x, 2.0, 5.0)),
        ("elu", {"alpha": 1.3}, lambda x: F.elu(x, 1.3)),
        ("celu", {"alpha": 0.7}, lambda x: F.celu(x, 0.7)),
        ("leaky_relu", {"negative_slope": 0.1}, lambda x: F.leaky_relu(x, 0.1)),
        ("hardtanh", {"min_val": -0.5, "max_val": 2.0}, lambda x: F.hardtanh(x, -0.5, 2.0)),
        ("clamp", {"min": -1.0, "max": None}, lambda x: torch.clamp(x, min=-1.0)),
        ("clamp", {"min": None, "max": 0.5}, lambda x: torch.clamp(x, max=0.5)),
        ("clamp", {"min": -0.25, "max": 0.75}, lambda x: torch.clamp(x, -0.25, 0.75)),
        ("pow", {"exponent": 2}, lambda x: torch.pow(x, 2)),
        ("pow", {"exponent": 3.0}, lambda x: torch.pow(x, 3.0)),
        ("pow", {"exponent": 0.5}, lambda x: torch.pow(x, 0.5)),
        ("pow", {"exponent": -1.5}, lambda x: torch.pow(x, -1.5)),
        ("pow", {"exponent": 5}, lambda x: torch.pow(x, 5)),
        ("pow", {"exponent": 4}, lambda x: torch.pow(x, 4)),
        ("identity", {}, lambda x: x),
    ]  # fmt: skip


FORMULA_BINARY = ("add", "sub", "mul", "div", "maximum", "minimum")


def formula_values() -> Any:
    """Inputs for the formula checks: a dense sweep, signed zeros, large values and NaN."""
    import torch

    specials = [0.0, -0.0, 1e-4, -1e-4, 1e-7, 25.0, -25.0, 60.0, -60.0, float("nan")]
    return torch.cat([torch.linspace(-12.0, 12.0, 481), torch.tensor(specials)])


def formula_case() -> Case:
    """Every formula of `formula_table` and every binary op as one multi-output group."""
    values = formula_values()
    shape = tuple(values.shape)
    b = GraphBuilder()
    x, y = b.input("x", shape), b.input("y", shape)
    table = formula_table()
    names = [b.op(f"u{i}_{kind}", kind, x, shape=shape, **params)
             for i, (kind, params, _) in enumerate(table)]  # fmt: skip
    names += [b.op(f"b_{kind}", kind, x, y, shape=shape) for kind in FORMULA_BINARY]
    graph = b.graph(*names)
    group = make_group(graph, "g0", "pointwise", names)

    def reference(f: dict[str, Any], p: dict[str, Any]) -> Any:
        import torch

        unary = [fn(f["x"]) for _, _, fn in table]
        ops = {"maximum": torch.maximum, "minimum": torch.minimum, "add": torch.add,
               "sub": torch.sub, "mul": torch.mul, "div": torch.div}  # fmt: skip
        return tuple(unary + [ops[k](f["x"], f["y"]) for k in FORMULA_BINARY])

    return Case("formulas", graph, group, {}, reference)


def formula_inputs() -> dict[str, Any]:
    """x sweeps the values; y is a shuffled copy with NaN in other places (maximum's NaN)."""

    x = formula_values()
    y = x.flip(0).clone()
    y[::7] = float("nan")
    return {"x": x, "y": y}


def softmax_case(cols: int = 37) -> Case:
    b = GraphBuilder()
    x = b.input("x", (6, cols))
    s = b.op("softmax", "softmax", x, shape=(6, cols), dim=1)
    graph = b.graph(s)
    group = make_group(graph, "g0", "reduction", [s], anchor=s)

    def reference(f: dict[str, Any], p: dict[str, Any]) -> Any:
        return f["x"].softmax(-1)

    return Case(f"softmax_{cols}", graph, group, {}, reference)


def rmsnorm_case(eps: float = 1e-6) -> Case:
    """x / sqrt(mean(x * x, -1, keepdim) + eps) * weight: prologue, anchor, epilogue."""
    b = GraphBuilder()
    x = b.input("x", (5, 24))
    weight = b.param("weight", (24,))
    sq = b.op("mul", "mul", x, x, shape=(5, 24))
    mean = b.op("mean", "mean", sq, shape=(5, 1), dim=(1,), keepdim=True)
    add = b.op("add", "add", mean, eps, shape=(5, 1))
    root = b.op("sqrt", "sqrt", add, shape=(5, 1))
    div = b.op("truediv", "div", x, root, shape=(5, 24))
    out = b.op("mul_1", "mul", div, weight, shape=(5, 24))
    graph = b.graph(out)
    group = make_group(graph, "g0", "reduction", [sq, mean, add, root, div, out], anchor=mean)

    def reference(f: dict[str, Any], p: dict[str, Any]) -> Any:
        x = f["x"]
        return x / (x * x).mean(-1, keepdim=True).add(eps).sqrt() * p["weight"]

    return Case("rmsnorm", graph, group, {"weight": (24,)}, reference)


def linear_add_relu_case() -> Case:
    """self.gemm(x) + self.bias -> relu, the Linear a call_module with attrs."""
    b = GraphBuilder()
    x = b.input("x", (4, 8))
    bias = b.param("bias", (16,))
    attrs = {"weight": "self.gemm.weight", "bias": "self.gemm.bias"}
    lin = b.op("gemm", "linear", x, shape=(4, 16), attrs=attrs, target="self.gemm")
    add = b.op("add", "add", lin, bias, shape=(4, 16))
    relu = b.op("relu", "relu", add, shape=(4, 16))
    graph = b.graph(relu)
    group = make_group(graph, "g0", "epilogue", [lin, add, relu], anchor=lin)

    def reference(f: dict[str, Any], p: dict[str, Any]) -> Any:
        import torch

        linear = torch.nn.functional.linear(f["x"], p["gemm.weight"], p["gemm.bias"])
        return torch.relu(linear + p["bias"])

    params = {"gemm.weight": (16, 8), "gemm.bias": (16,), "bias": (16,)}
    return Case("linear_add_relu", graph, group, params, reference)


def layer_norm_case() -> Case:
    """layer_norm over the last two dims with weight and bias, then a per-row residual."""
    b = GraphBuilder()
    x = b.input("x", (3, 4, 10))
    weight, bias = b.param("ln_weight", (4, 10)), b.param("ln_bias", (4, 10))
    ln = b.op("layer_norm", "layer_norm", x, weight, bias, shape=(3, 4, 10),
              normalized_shape=[4, 10], eps=1e-5)  # fmt: skip
    graph = b.graph(ln)
    group = make_group(graph, "g0", "reduction", [ln], anchor=ln)

    def reference(f: dict[str, Any], p: dict[str, Any]) -> Any:
        import torch

        return torch.nn.functional.layer_norm(f["x"], [4, 10], p["ln_weight"], p["ln_bias"], 1e-5)

    return Case("layer_norm", graph, group, {"ln_weight": (4, 10), "ln_bias": (4, 10)}, reference)


def sum_scale_case() -> Case:
    """sum over the last dim (no keepdim) times a per-row bias: a per-row epilogue and output."""
    b = GraphBuilder()
    x = b.input("x", (9, 13))
    row_bias = b.param("row_bias", (9,))
    total = b.op("sum_1", "sum", x, shape=(9,), dim=(1,), keepdim=False)
    out = b.op("add", "add", total, row_bias, shape=(9,))
    graph = b.graph(out)
    group = make_group(graph, "g0", "reduction", [total, out], anchor=total)

    def reference(f: dict[str, Any], p: dict[str, Any]) -> Any:
        return f["x"].sum(-1) + p["row_bias"]

    return Case("sum_row_bias", graph, group, {"row_bias": (9,)}, reference)


def log_softmax_case() -> Case:
    b = GraphBuilder()
    x = b.input("x", (2, 3, 19))
    ls = b.op("log_softmax", "log_softmax", x, shape=(2, 3, 19), dim=-1)
    graph = b.graph(ls)
    group = make_group(graph, "g0", "reduction", [ls], anchor=ls)
    return Case("log_softmax", graph, group, {}, lambda f, p: f["x"].log_softmax(-1))


def middle_dim_rmsnorm_case(eps: float = 1e-5) -> Case:
    """KernelBench's RMSNorm: x / sqrt(mean(x ** 2, dim=1, keepdim=True) + eps) on NCHW, a
    reduction over a non-last dim (strided rows)."""
    shape = (2, 6, 3, 5)
    b = GraphBuilder()
    x = b.input("x", shape)
    sq = b.op("pow_1", "pow", x, shape=shape, exponent=2)
    mean = b.op("mean", "mean", sq, shape=(2, 1, 3, 5), dim=(1,), keepdim=True)
    add = b.op("add", "add", mean, eps, shape=(2, 1, 3, 5))
    root = b.op("sqrt", "sqrt", add, shape=(2, 1, 3, 5))
    div = b.op("truediv", "div", x, root, shape=shape)
    graph = b.graph(div)
    group = make_group(graph, "g0", "reduction", [sq, mean, add, root, div], anchor=mean)

    def reference(f: dict[str, Any], p: dict[str, Any]) -> Any:
        x = f["x"]
        return x / (x**2).mean(1, keepdim=True).add(eps).sqrt()

    return Case("rmsnorm_dim1", graph, group, {}, reference)


def split_dims_case() -> Case:
    """amax over dims (0, 2) of (4, 3, 5) (kept dim in the middle), then a (3,) bias."""
    b = GraphBuilder()
    x = b.input("x", (4, 3, 5))
    bias = b.param("bias", (3,))
    top = b.op("amax", "amax", x, shape=(3,), dim=(0, 2), keepdim=False)
    out = b.op("add", "add", top, bias, shape=(3,))
    graph = b.graph(out)
    group = make_group(graph, "g0", "reduction", [top, out], anchor=top)

    def reference(f: dict[str, Any], p: dict[str, Any]) -> Any:
        return f["x"].amax(dim=(0, 2)) + p["bias"]

    return Case("amax_dims02", graph, group, {"bias": (3,)}, reference)


def softmax_dim0_case() -> Case:
    b = GraphBuilder()
    x = b.input("x", (7, 4, 3))
    s = b.op("softmax", "softmax", x, shape=(7, 4, 3), dim=0)
    graph = b.graph(s)
    group = make_group(graph, "g0", "reduction", [s], anchor=s)
    return Case("softmax_dim0", graph, group, {}, lambda f, p: f["x"].softmax(0))


def single_reduction_case(
    kind: str, shape: tuple[int, ...], out: tuple[int, ...], reference: Callable[[Any], Any],
    weight: tuple[int, ...] | None = None, **params: Any,
) -> Case:  # fmt: skip
    """One reduction node on its own (weight: a `self.weight` operand, as rms_norm's)."""
    b = GraphBuilder()
    x = b.input("x", shape)
    args = [x] + ([b.param("weight", weight)] if weight else [])
    node = b.op(kind, kind, *args, shape=out, **params)
    graph = b.graph(node)
    group = make_group(graph, "g0", "reduction", [node], anchor=node)
    weights = {"weight": weight} if weight else {}

    def check(f: dict[str, Any], p: dict[str, Any]) -> Any:
        return reference(f["x"]) if not weight else reference((f["x"], p["weight"]))

    return Case(f"{kind}_{len(shape)}d", graph, group, weights, check)


def reduction_kind_cases() -> list[Case]:
    """rms_norm, logsumexp, var, norm, amin and a mean over every dim, each on its own."""
    import torch

    return [
        single_reduction_case("rms_norm", (3, 20), (3, 20),
                              lambda xw: torch.nn.functional.rms_norm(xw[0], [20], xw[1], 1e-6),
                              weight=(20,), normalized_shape=[20], eps=1e-6),
        single_reduction_case("logsumexp", (4, 9), (4, 1),
                              lambda x: torch.logsumexp(x, 1, keepdim=True), dim=(1,), keepdim=True),
        single_reduction_case("var", (5, 11), (5,), lambda x: torch.var(x, 1),
                              dim=(1,), keepdim=False, correction=1),
        single_reduction_case("norm", (2, 3, 8), (2, 3), lambda x: torch.linalg.vector_norm(x, 2, -1),
                              dim=(2,), keepdim=False, p=2),
        single_reduction_case("amin", (6, 7), (6, 1), lambda x: x.amin(1, keepdim=True),
                              dim=(1,), keepdim=True),
        single_reduction_case("mean", (3, 4, 5), (), lambda x: x.mean(), dim=(0, 1, 2),
                              keepdim=False),
    ]  # fmt: skip


def interpreter_cases() -> list[Case]:
    return [
        pointwise_bias_case(),
        pointwise_bias_case((2, 3, 9, 11)),
        softmax_case(300),
        softmax_case(37),
        rmsnorm_case(),
        linear_add_relu_case(),
        layer_norm_case(),
        sum_scale_case(),
        log_softmax_case(),
        middle_dim_rmsnorm_case(),
        split_dims_case(),
        softmax_dim0_case(),
        *reduction_kind_cases(),
    ]


def numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def all_cases() -> dict[str, Case]:
    """Every runnable case by name (the interpreter driver looks them up so)."""
    cases = [*interpreter_cases(), formula_case()]
    return {case.name: case for case in cases}
