"""Shared fixtures of the kernel-writer tests: one torch-extensions build directory for the
session, and hand-made captured graphs (independent of the capture) with the reference
`Model` source that runs the same ops eagerly.

Builds are the expensive part (~15-25 s each on the 2-core machine): tests build few
distinct extensions and all of them land in one directory, $STARK_TEST_TORCH_EXTENSIONS when
set (so reruns reuse them), else a temporary directory of the session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from engine.agents.kernels.ir import (
    Arg,
    CapturedGraph,
    FusionGroup,
    GraphNode,
    TensorMeta,
)


@pytest.fixture(scope="session")
def torch_extensions_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """TORCH_EXTENSIONS_DIR for every load_inline of the session (restored afterwards)."""
    chosen = os.environ.get("STARK_TEST_TORCH_EXTENSIONS")
    path = Path(chosen) if chosen else tmp_path_factory.mktemp("torch_extensions")
    path.mkdir(parents=True, exist_ok=True)
    previous = os.environ.get("TORCH_EXTENSIONS_DIR")
    os.environ["TORCH_EXTENSIONS_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("TORCH_EXTENSIONS_DIR", None)
    else:
        os.environ["TORCH_EXTENSIONS_DIR"] = previous


F = "torch.nn.functional"
# Python for each kind, as fx would write the call ({0}, {1}: operands; {p[...]}: params).
PYTHON = {
    "neg": "-{0}",
    "abs": "torch.abs({0})",
    "relu": "torch.relu({0})",
    "sigmoid": "torch.sigmoid({0})",
    "tanh": "torch.tanh({0})",
    "exp": "torch.exp({0})",
    "log": "torch.log({0})",
    "log1p": "torch.log1p({0})",
    "sqrt": "torch.sqrt({0})",
    "rsqrt": "torch.rsqrt({0})",
    "reciprocal": "torch.reciprocal({0})",
    "erf": "torch.erf({0})",
    "sin": "torch.sin({0})",
    "cos": "torch.cos({0})",
    "square": "torch.square({0})",
    "gelu": F + ".gelu({0}, approximate={p[approximate]!r})",
    "silu": F + ".silu({0})",
    "mish": F + ".mish({0})",
    "softsign": F + ".softsign({0})",
    "selu": "torch.selu({0})",
    "hardsigmoid": F + ".hardsigmoid({0})",
    "hardswish": F + ".hardswish({0})",
    "softplus": F + ".softplus({0}, beta={p[beta]!r}, threshold={p[threshold]!r})",
    "elu": F + ".elu({0}, alpha={p[alpha]!r})",
    "celu": F + ".celu({0}, alpha={p[alpha]!r})",
    "leaky_relu": F + ".leaky_relu({0}, negative_slope={p[negative_slope]!r})",
    "hardtanh": F + ".hardtanh({0}, min_val={p[min_val]!r}, max_val={p[max_val]!r})",
    "clamp": "torch.clamp({0}, min={p[min]!r}, max={p[max]!r})",
    "pow": "torch.pow({0}, {p[exponent]!r})",
    "identity": "{0}",
    "add": "{0} + {1}",
    "sub": "{0} - {1}",
    "mul": "{0} * {1}",
    "div": "{0} / {1}",
    "maximum": "torch.maximum({0}, {1})",
    "minimum": "torch.minimum({0}, {1})",
    "sum": "torch.sum({0}, dim={p[dim]!r}, keepdim={p[keepdim]!r})",
    "mean": "torch.mean({0}, dim={p[dim]!r}, keepdim={p[keepdim]!r})",
    "amax": "torch.amax({0}, dim={p[dim]!r}, keepdim={p[keepdim]!r})",
    "amin": "torch.amin({0}, dim={p[dim]!r}, keepdim={p[keepdim]!r})",
    "logsumexp": "torch.logsumexp({0}, dim={p[dim]!r}, keepdim={p[keepdim]!r})",
    "var": "torch.var({0}, dim={p[dim]!r}, correction={p[correction]!r}, keepdim={p[keepdim]!r})",
    "norm": "torch.linalg.vector_norm({0}, 2, dim={p[dim]!r}, keepdim={p[keepdim]!r})",
    "softmax": "torch.softmax({0}, dim={p[dim]!r})",
    "log_softmax": "torch.log_softmax({0}, dim={p[dim]!r})",
    "layer_norm": F + ".layer_norm({0}, {p[normalized_shape]!r}, {1}, {2}, eps={p[eps]!r})",
    "rms_norm": F + ".rms_norm({0}, {p[normalized_shape]!r}, {1}, eps={p[eps]!r})",
    "bmm": "torch.bmm({0}, {1})",
    "matmul": "torch.matmul({0}, {1})",
    "addmm": "torch.addmm({0}, {1}, {2}, beta={p[beta]!r}, alpha={p[alpha]!r})",
    "conv1d": F
    + ".conv1d({0}, {1}, {2}, stride={p[stride]!r}, padding={p[padding]!r}, "
    + "dilation={p[dilation]!r}, groups={p[groups]!r})",
}
SUM_LIKE = ("sum", "mean", "amax", "amin", "logsumexp", "var", "norm")


@dataclass
class GraphBuilder:
    """Builds a CapturedGraph node by node, plus the reference Model that runs its code."""

    nodes: list[GraphNode] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    init_lines: list[str] = field(default_factory=list)
    groups: list[FusionGroup] = field(default_factory=list)
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def shape(self, name: str) -> tuple[int, ...]:
        meta = next(n.meta for n in self.nodes if n.name == name)
        assert meta is not None
        return meta.shape

    def input(self, name: str, shape: tuple[int, ...]) -> str:
        self.nodes.append(
            GraphNode(name, "placeholder", "input", "input", meta=TensorMeta(shape, "float32"))
        )
        self.inputs.append(name)
        self.input_shapes[name] = shape
        return name

    def param(self, name: str, shape: tuple[int, ...], init: str = "torch.randn") -> str:
        self.init_lines.append(f"self.{name} = torch.nn.Parameter({init}{shape!r})")
        self.nodes.append(
            GraphNode(
                name,
                "get_attr",
                "param",
                "input",
                meta=TensorMeta(shape, "float32"),
                code=f"{name} = self.{name}",
                target=name,
            )
        )
        return name

    def op(self, kind: str, *operands: Any, name: str | None = None, **params: Any) -> str:
        """A pointwise or reduction node (shape from broadcasting / the reduction)."""
        name = name or self._fresh(kind)
        args = tuple(Arg(node=o) if isinstance(o, str) else Arg(value=o) for o in operands)
        tensors = [o for o in operands if isinstance(o, str)]
        if kind in SUM_LIKE:
            shape = _reduced(self.shape(tensors[0]), params["dim"], params["keepdim"])
            op_class = "reduction"
        elif kind in ("softmax", "log_softmax", "layer_norm", "rms_norm"):
            shape, op_class = self.shape(tensors[0]), "reduction"
        else:
            shape = _broadcast([self.shape(t) for t in tensors])
            op_class = "pointwise"
        texts = [o if isinstance(o, str) else repr(o) for o in operands]
        code = f"{name} = " + PYTHON[kind].format(*texts, p=params)
        self.nodes.append(
            GraphNode(
                name,
                "call_function",
                kind,
                op_class,
                args,
                dict(params),
                TensorMeta(shape, "float32"),
                code,
            )
        )
        return name

    def call(
        self,
        kind: str,
        op_class: str,
        operands: tuple[str, ...],
        shape: tuple[int, ...],
        **params: Any,
    ) -> str:
        """A functional matmul/conv-like node (`PYTHON[kind]` over tensor operands)."""
        name = self._fresh(kind)
        code = f"{name} = " + PYTHON[kind].format(*operands, p=params)
        args = tuple(Arg(node=o) for o in operands)
        self.nodes.append(
            GraphNode(
                name,
                "call_function",
                kind,
                op_class,
                args,
                params,
                TensorMeta(shape, "float32"),
                code,
            )
        )
        return name

    def module(
        self,
        attribute: str,
        constructor: str,
        kind: str,
        op_class: str,
        x: str,
        shape: tuple[int, ...],
        tensors: tuple[str, ...] = ("weight", "bias"),
        **params: Any,
    ) -> str:
        """An nn.Module call (`self.<attribute>(x)`), its tensors in attrs as the capture
        records them."""
        self.init_lines.append(f"self.{attribute} = {constructor}")
        attrs = {t: f"self.{attribute}.{t}" for t in tensors}
        self.nodes.append(
            GraphNode(
                attribute,
                "call_module",
                kind,
                op_class,
                (Arg(node=x),),
                params,
                TensorMeta(shape, "float32"),
                f"{attribute} = self.{attribute}({x})",
                target=attribute,
                attrs=attrs,
            )
        )
        return attribute

    def group(
        self,
        kind: str,
        nodes: list[str],
        outputs: list[str] | None = None,
        anchor: str | None = None,
    ) -> FusionGroup:
        members = set(nodes)
        node_map = {n.name: n for n in self.nodes}
        inputs = list(
            dict.fromkeys(
                a.node
                for n in nodes
                for a in node_map[n].args
                if a.node is not None and a.node not in members
            )
        )
        summary = " -> ".join(node_map[n].kind for n in nodes)
        group = FusionGroup(
            f"g{len(self.groups)}",
            kind,
            tuple(nodes),
            tuple(inputs),
            tuple(outputs or [nodes[-1]]),
            anchor,
            summary,
        )
        self.groups.append(group)
        return group

    def graph(self, outputs: list[str]) -> CapturedGraph:
        returned = outputs[0] if len(outputs) == 1 else "(" + ", ".join(outputs) + ",)"
        return CapturedGraph(
            tuple(self.nodes), tuple(self.inputs), f"return {returned}", tuple(outputs)
        )

    def reference(self, outputs: list[str]) -> str:
        """A reference module whose Model runs the graph's code lines eagerly."""
        init = self.init_lines or ["pass"]
        forward = [n.code for n in self.nodes if n.code]
        graph = self.graph(outputs)
        shapes = ", ".join(f"torch.randn{s!r}" for s in self.input_shapes.values())
        return "\n".join(
            [
                "import torch",
                "import torch.nn as nn",
                "",
                "",
                "class Model(nn.Module):",
                "    def __init__(self):",
                "        super().__init__()",
                *("        " + line for line in init),
                "",
                f"    def forward(self, {', '.join(self.inputs)}):",
                *("        " + line for line in forward),
                "        " + graph.output_code,
                "",
                "",
                "def get_inputs():",
                f"    return [{shapes}]",
                "",
                "",
                "def get_init_inputs():",
                "    return []",
                "",
            ]
        )

    def _fresh(self, kind: str) -> str:
        taken = {n.name for n in self.nodes}
        if kind not in taken:
            return kind
        index = 1
        while f"{kind}_{index}" in taken:
            index += 1
        return f"{kind}_{index}"


def _broadcast(shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    rank = max(len(s) for s in shapes)
    out = [1] * rank
    for shape in shapes:
        for i, size in enumerate((1,) * (rank - len(shape)) + shape):
            out[i] = size if size != 1 else out[i]
    return tuple(out)


def _reduced(shape: tuple[int, ...], dims: tuple[int, ...], keepdim: bool) -> tuple[int, ...]:
    if keepdim:
        return tuple(1 if d in dims else s for d, s in enumerate(shape))
    return tuple(s for d, s in enumerate(shape) if d not in dims)


@pytest.fixture
def graph_builder() -> GraphBuilder:
    return GraphBuilder()
