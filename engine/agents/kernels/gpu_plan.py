"""The plan of one group's GPU kernel, before it is written in Triton or CUDA C: its
parameters, loads, per-element statements and stores (`PointwisePlan`, `RowPlan`; built by
`gpu_lowering`), and the helpers that read the captured graph for them.

Every value is a statement `v_<node> = ...`; operands from outside the group are loads. A
broadcast operand (a (C, 1, 1) bias on NCHW, an (N,) bias on [B, N], a scalar tensor) is
read at an index computed from the element's own index (`IndexTerm`s), so no operand is
ever expanded in memory. Shapes are the captured ones: the kernels are specialised to them
and their launchers check them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from engine.agents.kernels.gpu_exprs import GpuSyntax, formula_problem, pointwise_expr
from engine.agents.kernels.ir import (
    BINARY_POINTWISE,
    UNARY_POINTWISE,
    CapturedGraph,
    FusionGroup,
    GraphNode,
    TensorMeta,
)

Space = Literal["full", "row"]
Axis = Literal["flat", "row", "col"]
FLOAT_DTYPES = frozenset(["float32", "float16", "bfloat16"])
ANCHORS = frozenset(["linear", "matmul", "mm", "bmm", "addmm"]) | frozenset(
    f"conv{t}{d}d" for t in ("", "_transpose") for d in (1, 2, 3)
)
# Names a group input or output may not take in the generated code, which then renames it:
# the launchers' own names and locals, and C++ keywords (fx names are Python identifiers).
_RESERVED_WORDS = """
torch triton tl os math self grid at c10 std stream device_guard n done n_vec
auto bool case catch char class const default delete do double enum explicit extern float
friend goto inline int long mutable namespace new operator private protected public register
short signed sizeof static struct switch template this throw try typedef typename union
unsigned using virtual void volatile
"""
RESERVED = frozenset(_RESERVED_WORDS.split())


class Unsupported(ValueError):
    """A group this lowering cannot plan; the message says why."""


@dataclass(frozen=True, slots=True)
class IndexTerm:
    """(i // divisor % modulus) * stride, with i the flat, row or column index."""

    axis: Axis
    divisor: int
    modulus: int | None
    stride: int


def render_index(terms: tuple[IndexTerm, ...], names: dict[str, str], floordiv: str) -> str:
    """An operand's element index as an expression; `names` maps each axis to its variable."""
    if not terms:
        return "0"
    parts = []
    for term in terms:
        text = names[term.axis]
        if term.divisor != 1:
            text = f"{text} {floordiv} {term.divisor}"
        if term.modulus is not None:
            text = f"{text} % {term.modulus}"
        if term.stride != 1:
            text = f"({text}) * {term.stride}" if " " in text else f"{text} * {term.stride}"
        parts.append(text)
    return " + ".join(parts)


@dataclass(frozen=True, slots=True)
class KernelParam:
    """A tensor the launcher takes: `name` in the generated code, `call` in forward()."""

    name: str
    call: str
    meta: TensorMeta | None
    module: bool = False  # an nn.Module the launcher calls (a conv anchor), not a tensor


@dataclass(frozen=True, slots=True)
class Operand:
    var: str | None = None  # a value's variable
    value: float | None = None  # or a constant


@dataclass(frozen=True, slots=True)
class Load:
    var: str
    tensor: str  # the KernelParam (or the anchor's result) it reads
    space: Space
    terms: tuple[IndexTerm, ...] | None  # None: the same shape as the loop (index i itself)
    dtype: str


@dataclass(frozen=True, slots=True)
class Step:
    var: str
    kind: str
    params: dict[str, Any]
    operands: tuple[Operand, ...]
    space: Space = "full"


@dataclass(frozen=True, slots=True)
class Store:
    var: str
    output: str  # the group output (node name) this is
    target: str  # the buffer written: the output's own, or the anchor's result (in place)
    space: Space
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True, slots=True)
class AnchorCall:
    """The matmul/conv an epilogue group leaves to torch, with its operands' names."""

    var: str  # the result's name in the launcher
    kind: str
    operands: tuple[str | None, ...]  # KernelParam names, None for an absent bias
    params: dict[str, Any]
    module: str | None  # "self.conv": a call_module anchor with no captured parameters
    meta: TensorMeta


@dataclass(frozen=True, slots=True)
class PointwisePlan:
    group: FusionGroup
    title: str  # "g0_mul_sigmoid_add": kernel and function names start with it
    params: tuple[KernelParam, ...]
    shape: tuple[int, ...]
    loads: tuple[Load, ...]
    steps: tuple[Step, ...]
    stores: tuple[Store, ...]
    anchor: AnchorCall | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def buffers(self) -> tuple[str, ...]:
        """Every tensor the kernel reads or writes, in argument order."""
        names = [load.tensor for load in self.loads]
        names += [s.target for s in self.stores]
        return tuple(dict.fromkeys(names))


@dataclass(frozen=True, slots=True)
class RowPlan:
    group: FusionGroup
    title: str
    params: tuple[KernelParam, ...]
    shape: tuple[int, ...]  # the reduced tensor's shape
    rows: int
    cols: int
    reduced: tuple[int, ...]  # the reduced dims: a row is one choice of the others
    offsets: tuple[IndexTerm, ...]  # element (row, col)'s index in the reduced tensor
    anchor: Step  # the reduction, operands (x, weight, bias)
    loads: tuple[Load, ...]
    steps: tuple[Step, ...]  # topological, the anchor included
    stores: tuple[Store, ...]
    input_dtype: str = "float32"
    notes: list[str] = field(default_factory=list)

    @property
    def buffers(self) -> tuple[str, ...]:
        names = [load.tensor for load in self.loads] + [s.target for s in self.stores]
        return tuple(dict.fromkeys(names))

    def needed(self, wanted: set[str], space: Space) -> tuple[list[Load], list[Step]]:
        """The loads and steps of `space` that compute the variables in `wanted`."""
        need = set(wanted)
        steps: list[Step] = []
        for step in reversed(self.steps):
            if step.var in need and step.space == space:
                steps.append(step)
                need.update(o.var for o in step.operands if o.var)
        loads = [ld for ld in self.loads if ld.var in need and ld.space == space]
        return loads, steps[::-1]


def kernel_title(graph: CapturedGraph, group: FusionGroup, limit: int = 5) -> str:
    kinds = [graph.node(n).kind for n in group.nodes]
    words = kinds[:limit] + (["etc"] if len(kinds) > limit else [])
    return "_".join([group.id, *words])


def tensor_meta(graph: CapturedGraph, name: str) -> TensorMeta:
    node = graph.node(name)
    if node.meta is None:
        raise Unsupported(f"{name} is not a tensor")
    if node.meta.dtype not in FLOAT_DTYPES:
        raise Unsupported(f"{name} is {node.meta.dtype}: GPU kernels take float32/16, bfloat16")
    if math.prod(node.meta.shape) == 0:
        raise Unsupported(f"{name} is empty {node.meta.shape}")
    return node.meta


def self_expr(path: str) -> str:
    return path if path.startswith("self.") else f"self.{path}"


def identifier(text: str) -> str:
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in text.removeprefix("self."))
    name = name if name and not name[0].isdigit() else f"t_{name}"
    return f"{name}_" if name in RESERVED else name


def kernel_params(graph: CapturedGraph, names: list[str]) -> list[KernelParam]:
    """The group's inputs as the launcher takes them (parameters read from `self.`)."""
    params = []
    for name in names:
        node = graph.node(name)
        call = self_expr(node.target or name) if node.op == "get_attr" else name
        if node.meta is not None and not node.meta.contiguous:
            call = f"{call}.contiguous()"
        params.append(KernelParam(identifier(name), call, node.meta))
    return params


def broadcast_terms(
    shape: tuple[int, ...], out: tuple[int, ...], axes: tuple[Axis, ...] | None = None
) -> tuple[IndexTerm, ...] | None:
    """How an operand of `shape` is indexed in a loop over `out` (None: elementwise, the
    loop's own index). `axes` says which index each dim of `out` belongs to: all "flat"
    (pointwise), or "row"/"col" for a reduction (its kept and its reduced dims)."""
    if len(shape) > len(out):
        raise Unsupported(f"an operand of shape {shape} does not broadcast to {out}")
    padded = (1,) * (len(out) - len(shape)) + tuple(shape)
    if padded == tuple(out):
        return None
    return index_terms(padded, tuple(out), axes or ("flat",) * len(out))


def index_terms(
    padded: tuple[int, ...], out: tuple[int, ...], axes: tuple[Axis, ...]
) -> tuple[IndexTerm, ...]:
    """Dims are grouped into runs, of one axis, where the operand is either full or broadcast;
    each full run adds one term: (index // inner % size) * stride."""
    runs: list[tuple[Axis, bool, list[int]]] = []  # (axis, full, dims)
    for d, (o, s) in enumerate(zip(out, padded, strict=True)):
        if o == 1:
            continue
        if s not in (1, o):
            raise Unsupported(f"an operand of shape {padded} does not broadcast to {out}")
        if runs and runs[-1][0] == axes[d] and runs[-1][1] == (s == o):
            runs[-1][2].append(d)
        else:
            runs.append((axes[d], s == o, [d]))
    terms = []
    for axis, full, dims in runs:
        if not full:
            continue
        later = [e for e in range(dims[-1] + 1, len(out)) if axes[e] == axis]
        inner = math.prod(out[e] for e in later)
        outermost = not any(axes[e] == axis and out[e] != 1 for e in range(dims[0]))
        size = math.prod(out[d] for d in dims)
        stride = math.prod(padded[dims[-1] + 1 :])
        terms.append(IndexTerm(axis, inner, None if outermost else size, stride))
    return tuple(terms)


def operand(arg_node: str | None, value: Any, group_nodes: set[str], load_var: str) -> Operand:
    if arg_node is None:
        if isinstance(value, bool | int | float):
            return Operand(value=float(value))
        raise Unsupported(f"a constant operand {value!r} is not a number")
    return Operand(var=f"v_{arg_node}" if arg_node in group_nodes else load_var)


def check_pointwise_node(node: GraphNode) -> None:
    if node.op_class != "pointwise" or node.kind not in UNARY_POINTWISE | BINARY_POINTWISE:
        raise Unsupported(f"{node.name} ({node.kind}) is not a pointwise op")
    problem = formula_problem(node.kind, node.params)
    if problem:
        raise Unsupported(f"{node.name}: {problem}")
    tensors = [a for a in node.args if a.is_tensor]
    if not tensors:
        raise Unsupported(f"{node.name} reads no tensor")


def anchor_call(graph: CapturedGraph, anchor: GraphNode) -> tuple[AnchorCall, list[KernelParam]]:
    """The anchor's torch call, and the launcher parameters it adds: the weights a
    call_module anchor reads from `self.` (attrs), or the module itself when a conv's
    stride/padding/dilation/groups were not captured (then it is called as it is)."""
    if anchor.kind not in ANCHORS:
        raise Unsupported(f"anchor {anchor.name} ({anchor.kind}) is not a matmul or conv")
    if anchor.meta is None:
        raise Unsupported(f"anchor {anchor.name} has no tensor meta")
    names: list[str | None] = []
    for a in anchor.args:
        if a.is_tensor:
            names.append(identifier(a.node or ""))
        elif a.value is None:
            names.append(None)
        else:
            raise Unsupported(f"anchor {anchor.name} has a constant operand {a.value!r}")
    extra: list[KernelParam] = []
    conv_keys = {"stride", "padding", "dilation", "groups"}
    if anchor.kind.startswith("conv") and not conv_keys <= set(anchor.params):
        if anchor.op != "call_module":
            raise Unsupported(f"conv {anchor.name}: stride/padding/dilation/groups not captured")
        module = KernelParam(
            f"{identifier(anchor.target)}_module", self_expr(anchor.target), None, module=True
        )
        call = AnchorCall(identifier(anchor.name), anchor.kind, tuple(names[:1]), anchor.params,
                          module.name, anchor.meta)  # fmt: skip
        return call, [module]
    if anchor.kind == "linear" or anchor.kind.startswith("conv"):
        for slot, key in ((1, "weight"), (2, "bias")):
            if len(names) > slot:
                continue
            path = anchor.attrs.get(key)
            names.append(identifier(path) if path else None)
            if path:
                extra.append(KernelParam(identifier(path), self_expr(path), None))
        if names[1] is None:
            raise Unsupported(f"anchor {anchor.name} has no weight")
    call = AnchorCall(identifier(anchor.name), anchor.kind, tuple(names), anchor.params, None,
                      anchor.meta)  # fmt: skip
    return call, extra


def operand_text(syntax: GpuSyntax, op: Operand) -> str:
    if op.var is not None:
        return op.var
    if op.value is None:
        raise ValueError("an absent operand has no text")
    return syntax.lit(op.value)


def step_expr(syntax: GpuSyntax, step: Step) -> str:
    """A pointwise step's expression in `syntax`."""
    operands = [operand_text(syntax, o) for o in step.operands]
    return pointwise_expr(syntax, step.kind, operands, step.params)
