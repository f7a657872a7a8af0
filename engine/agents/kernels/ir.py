"""The captured graph, the fusion groups and the generated code, as plain data.

The capture (`engine.agents.kernels.capture`) runs torch.fx on the real module in a child
process and returns a `CapturedGraph`; everything downstream (fusion, schedules, code
generation, rendering) works on these types without importing torch. They round-trip through
JSON so a node's header and a resumed run can carry them.

Operator vocabulary (`GraphNode.kind`) for the classes code generation understands. Operands
of a node are `GraphNode.args` in the order listed; scalars are `Arg(value=...)`; the rest of
an op's parameters are in `GraphNode.params` under the names given here (always present,
defaults filled in by the capture):

pointwise, unary (one tensor arg):
    neg abs relu sigmoid tanh exp log log1p sqrt rsqrt reciprocal erf sin cos square
    gelu{approximate: "none"|"tanh"} silu mish softsign selu hardsigmoid hardswish
    softplus{beta, threshold} elu{alpha} celu{alpha} leaky_relu{negative_slope}
    hardtanh{min_val, max_val} clamp{min, max (either may be None)} pow{exponent}
    identity (dropout with p=0 or in eval mode, contiguous(), float() on float32, ...)
pointwise, binary (two args, each a tensor or a scalar; broadcasting as in torch):
    add sub mul div maximum minimum
    (`add`/`sub` with alpha != 1 are captured as kind "other")
reduction (one tensor arg; `dim` is a tuple of non-negative ints, `keepdim` a bool):
    sum{dim, keepdim} mean{dim, keepdim} amax{dim, keepdim} amin{dim, keepdim}
    logsumexp{dim, keepdim} var{dim, keepdim, correction} norm{dim, keepdim, p: 2}
    softmax{dim: int} log_softmax{dim: int}
    layer_norm{normalized_shape: list[int], eps} (args: x, weight|None, bias|None)
    rms_norm{normalized_shape, eps} (args: x, weight|None)
    group_norm{num_groups, eps} (args: x, weight|None, bias|None)
    batch_norm{eps, momentum, training} (args: x, running_mean, running_var, weight, bias)
    argmax{dim, keepdim} argmin{dim, keepdim}   (int64 output)
matmul: linear (args: x, weight, bias|None) matmul mm bmm addmm
conv: conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d
data_movement: view reshape flatten permute transpose squeeze unsqueeze expand contiguous
    cat getitem
other: anything else (pooling, cumsum, losses, ...): it stays a torch op.

Tensor-valued args that are parameters or buffers of the module are `Arg(node=...)` naming a
`get_attr` node, or, for call_module nodes, appear in `GraphNode.attrs` (e.g. a Linear's
{"weight": "self.gemm.weight", "bias": "self.gemm.bias"}; each a Python expression, e.g.
'getattr(self.features, "0").weight' in an nn.Sequential), so generated code can read them
from `self` and the weights stay the reference's.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

OpClass = Literal["input", "pointwise", "reduction", "matmul", "conv", "data_movement", "other"]
OP_CLASSES: tuple[str, ...] = (
    "input",
    "pointwise",
    "reduction",
    "matmul",
    "conv",
    "data_movement",
    "other",
)
GroupKind = Literal["pointwise", "reduction", "epilogue"]
Backend = Literal["cpp", "triton", "cuda"]

UNARY_POINTWISE: frozenset[str] = frozenset(
    [
        "neg",
        "abs",
        "relu",
        "sigmoid",
        "tanh",
        "exp",
        "log",
        "log1p",
        "sqrt",
        "rsqrt",
        "reciprocal",
        "erf",
        "sin",
        "cos",
        "square",
        "gelu",
        "silu",
        "mish",
        "softsign",
        "selu",
        "hardsigmoid",
        "hardswish",
        "softplus",
        "elu",
        "celu",
        "leaky_relu",
        "hardtanh",
        "clamp",
        "pow",
        "identity",
    ]
)
BINARY_POINTWISE: frozenset[str] = frozenset(["add", "sub", "mul", "div", "maximum", "minimum"])
REDUCTIONS: frozenset[str] = frozenset(
    [
        "sum",
        "mean",
        "amax",
        "amin",
        "logsumexp",
        "var",
        "norm",
        "softmax",
        "log_softmax",
        "layer_norm",
        "rms_norm",
        "group_norm",
        "batch_norm",
        "argmax",
        "argmin",
    ]
)


@dataclass(frozen=True, slots=True)
class TensorMeta:
    shape: tuple[int, ...]
    dtype: str  # torch dtype name without "torch.", e.g. "float32"
    contiguous: bool = True

    @property
    def numel(self) -> int:
        total = 1
        for size in self.shape:
            total *= size
        return total


@dataclass(frozen=True, slots=True)
class Arg:
    """One operand: the value of another node (`node`), or a JSON constant (`value`)."""

    node: str | None = None
    value: Any = None

    @property
    def is_tensor(self) -> bool:
        return self.node is not None


@dataclass(frozen=True, slots=True)
class GraphNode:
    name: str  # fx node name: also the variable that holds its value in generated code
    op: str  # fx opcode: placeholder call_function call_method call_module get_attr output
    kind: str  # normalised operator (module docstring), "input", "param" or "other"
    op_class: OpClass
    args: tuple[Arg, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    meta: TensorMeta | None = None  # the output's shape/dtype; None for non-tensors
    code: str = ""  # the fx-generated statement computing it, e.g. "relu = torch.relu(x)"
    target: str = ""  # what fx calls: "torch.relu", "self.gemm", "view", ...
    attrs: dict[str, str] = field(default_factory=dict)  # e.g. {"weight": "self.gemm.weight"}


@dataclass(frozen=True, slots=True)
class CapturedGraph:
    nodes: tuple[GraphNode, ...]  # topological order; placeholders first
    inputs: tuple[str, ...]  # forward's parameters, in order, by node name (`input` -> `input_1`)
    output_code: str  # the forward's return statement as fx wrote it, e.g. "return (relu,)"
    outputs: tuple[str, ...]  # the node names the return statement reads
    method: str = "torch.fx.symbolic_trace"
    device: str = "cpu"
    # import statements the code lines need beyond torch/operator/builtins ("from math import inf")
    imports: tuple[str, ...] = ()

    def node(self, name: str) -> GraphNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node {name!r} in the captured graph")

    def users(self, name: str) -> list[GraphNode]:
        """The nodes that read `name`, in order (the output counts as a user via `outputs`)."""
        return [n for n in self.nodes if any(a.node == name for a in n.args)]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CapturedGraph:
        nodes = []
        for raw in data["nodes"]:
            meta = raw.get("meta")
            nodes.append(
                GraphNode(
                    name=raw["name"],
                    op=raw["op"],
                    kind=raw["kind"],
                    op_class=raw["op_class"],
                    args=tuple(Arg(**a) for a in raw.get("args", ())),
                    params=_params(raw.get("params", {})),
                    meta=None
                    if meta is None
                    else TensorMeta(tuple(meta["shape"]), meta["dtype"], meta["contiguous"]),
                    code=raw.get("code", ""),
                    target=raw.get("target", ""),
                    attrs=dict(raw.get("attrs", {})),
                )
            )
        return cls(
            nodes=tuple(nodes),
            inputs=tuple(data["inputs"]),
            output_code=data["output_code"],
            outputs=tuple(data["outputs"]),
            method=data.get("method", "torch.fx.symbolic_trace"),
            device=data.get("device", "cpu"),
            imports=tuple(data.get("imports", ())),
        )

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)


def _params(raw: dict[str, Any]) -> dict[str, Any]:
    """JSON turns tuples into lists: a reduction's `dim` is a tuple again after the trip."""
    params = dict(raw)
    if isinstance(params.get("dim"), list):
        params["dim"] = tuple(params["dim"])
    return params


@dataclass(frozen=True, slots=True)
class CaptureFailure:
    """Why the reference could not be captured; the agent falls back to wrappers."""

    reason: str


@dataclass(frozen=True, slots=True)
class FusionGroup:
    """A set of graph nodes computed by one generated kernel.

    - pointwise: a maximal chain/tree of pointwise nodes;
    - reduction: one reduction node (`anchor`) with its pointwise prologue (ops applied to
      its input on the way in) and epilogue (ops that read the reduced value, possibly
      together with the un-reduced input, e.g. x / sqrt(mean(x*x) + eps));
    - epilogue: a matmul/conv node (`anchor`, kept as an at::/torch call) and the pointwise
      ops after it (bias, activation, scale, residual), applied in one pass.
    """

    id: str  # "g0", "g1", ...: numbered by the position of the group's first node
    kind: GroupKind
    nodes: tuple[str, ...]  # graph node names, topological order
    inputs: tuple[str, ...]  # values read from outside the group (node names)
    outputs: tuple[str, ...]  # group values read after it (by other nodes or the return)
    anchor: str | None = None
    summary: str = ""  # e.g. "linear -> add -> relu"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FusionGroup:
        return cls(
            id=data["id"],
            kind=data["kind"],
            nodes=tuple(data["nodes"]),
            inputs=tuple(data["inputs"]),
            outputs=tuple(data["outputs"]),
            anchor=data.get("anchor"),
            summary=data.get("summary", ""),
        )


@dataclass(frozen=True, slots=True)
class GeneratedGroup:
    """One group's generated code, ready to be placed in a `ModelNew` module.

    cpp: `cpp_source` holds the C++ definitions (no `#include <torch/extension.h>`, which
    load_inline adds) and `functions` the names to bind; cuda: `cpp_source` holds the
    declarations and `cuda_source` the definitions; triton: `python_source` holds the
    `@triton.jit` kernel(s) and a Python launch function. `call` is the Python expression
    forward() evaluates, reading the group's `inputs` by their node names (and `self.` for
    parameters); `_stark_ext` names the module load_inline returns. It returns one tensor
    for a single output, else a tuple in `outputs` order.
    """

    group_id: str
    backend: Backend
    call: str
    outputs: tuple[str, ...]
    functions: tuple[str, ...] = ()
    cpp_source: str = ""
    cuda_source: str = ""
    python_source: str = ""
    schedule: dict[str, Any] = field(default_factory=dict)  # what was applied, for the header
