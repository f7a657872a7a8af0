"""fx nodes described as plain data, and the helpers that read their arguments.

The capture worker (the only module that imports torch) describes each fx node as a
`RawNode`: its target by name ("operator.add", "torch.relu", "F.relu", "Tensor.relu",
"nn.ReLU"), its arguments with other nodes as `Ref`s, and, for a module call, the module's
hyper-parameters (`ModuleInfo`). `capture_rules` turns that into a `GraphNode` without
torch, so the whole operator vocabulary can be tested without a child process.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.agents.kernels.ir import (
    BINARY_POINTWISE,
    REDUCTIONS,
    UNARY_POINTWISE,
    Arg,
    TensorMeta,
)

FLOAT32_EPS = 1.1920928955078125e-07  # torch.finfo(torch.float32).eps: rms_norm's eps=None


@dataclass(frozen=True, slots=True)
class Ref:
    """An operand that is another fx node's value."""

    name: str


@dataclass(frozen=True, slots=True)
class Opaque:
    """A constant JSON cannot hold (dtype, device, slice, ...), by its repr: "torch.float32"."""

    text: str


@dataclass(frozen=True, slots=True)
class ModuleInfo:
    path: str  # "self.gemm"
    training: bool
    constants: dict[str, Any] = field(default_factory=dict)  # hyper-parameters: eps, dim, ...
    tensors: tuple[str, ...] = ()  # its own parameters/buffers that are set: weight, bias, ...


@dataclass(frozen=True, slots=True)
class RawNode:
    name: str
    op: str  # fx opcode
    target: str  # "operator.add", "torch.relu", "F.relu", "Tensor.relu", "nn.ReLU", ...
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    meta: TensorMeta | None = None
    code: str = ""
    module: ModuleInfo | None = None


@dataclass(frozen=True, slots=True)
class Context:
    """What normalising one node needs to know about the others."""

    metas: Mapping[str, TensorMeta | None]
    ops: Mapping[str, str]  # node name -> fx opcode
    users: Mapping[str, int]  # node name -> how many nodes (or the return) read it


@dataclass(frozen=True, slots=True)
class Normalised:
    kind: str
    op_class: str
    args: tuple[Arg, ...]
    params: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, str] = field(default_factory=dict)


class Unsupported(Exception):
    """This call is not understood exactly: the node stays a torch op ("other")."""


@functools.cache
def spec(text: str) -> tuple[tuple[str, ...], dict[str, Any]]:
    """'input, dim=None, keepdim=False' -> (names, defaults): a torch-free signature."""
    names: list[str] = []
    defaults: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",")):
        name, eq, default = part.partition("=")
        names.append(name.strip())
        if eq:
            defaults[name.strip()] = ast.literal_eval(default.strip())
    return tuple(names), defaults


def bind(call: RawNode, signature: str) -> dict[str, Any]:
    """The call's arguments by parameter name, defaults filled in; Unsupported if they do
    not fit the signature (too many, an unknown keyword, a required one missing)."""
    names, defaults = spec(signature)
    if len(call.args) > len(names):
        raise Unsupported
    bound = dict(zip(names, call.args, strict=False))
    for key, value in call.kwargs.items():
        if key not in names or key in bound:
            raise Unsupported
        bound[key] = value
    for name in names:
        if name not in bound:
            if name not in defaults:
                raise Unsupported
            bound[name] = defaults[name]
    return bound


def tensor_meta(ctx: Context, value: Any) -> TensorMeta:
    if not isinstance(value, Ref) or ctx.metas.get(value.name) is None:
        raise Unsupported
    return ctx.metas[value.name]  # type: ignore[return-value]


def number(value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unsupported
    return value


def optional_number(value: Any) -> float | int | None:
    return None if value is None else number(value)


def dims(value: Any, rank: int, empty_means_all: bool = False) -> tuple[int, ...]:
    """A reduction's `dim` as a sorted tuple of non-negative ints; None means every dim."""
    if rank == 0:
        raise Unsupported  # a 0-d tensor: nothing to reduce over
    if value is None or (empty_means_all and value in ((), [])):
        return tuple(range(rank))
    items = list(value) if isinstance(value, list | tuple) else [value]
    out = set()
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or not -rank <= item < rank:
            raise Unsupported
        out.add(item % rank)
    return tuple(sorted(out))


def one_dim(value: Any, rank: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Unsupported
    (dim,) = dims(value, rank)
    return dim


def int_list(value: Any, size: int) -> list[int] | str:
    """A conv's stride/padding/dilation as `size` ints (padding may be "same"/"valid")."""
    if isinstance(value, str):
        return value
    items = list(value) if isinstance(value, list | tuple) else [value] * size
    if len(items) == 1:
        items = items * size
    if len(items) != size or not all(isinstance(i, int) and not isinstance(i, bool) for i in items):
        raise Unsupported
    return items


def operand(value: Any) -> Arg:
    if isinstance(value, Ref):
        return Arg(node=value.name)
    if value is None:
        return Arg(value=None)
    return Arg(value=number(value))


def optional_tensor(value: Any) -> Arg:
    if value is not None and not isinstance(value, Ref):
        raise Unsupported
    return operand(value)


def refs_read(raw: RawNode) -> tuple[Arg, ...]:
    """Every node the statement reads, in order, each once: the operands of "other" nodes."""
    seen: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, Ref):
            if value.name not in seen:
                seen.append(value.name)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(raw.args)
    walk(raw.kwargs)
    return tuple(Arg(node=name) for name in seen)


def op_class_of(kind: str) -> str:
    if kind in UNARY_POINTWISE or kind in BINARY_POINTWISE:
        return "pointwise"
    if kind in REDUCTIONS:
        return "reduction"
    return "other"
