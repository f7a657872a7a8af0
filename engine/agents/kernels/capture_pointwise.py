"""Pointwise fx calls normalised to the `ir` vocabulary (one rule per operator name).

Each rule takes (kind, raw node, context) and returns the `Normalised` node, raising
`Unsupported` when the call's arguments are not understood exactly: `alpha != 1`, a
tensor exponent or clamp bound, dropout that is live, `.to()` anything but float32.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.agents.kernels.capture_ops import (
    Context,
    Normalised,
    Opaque,
    RawNode,
    Unsupported,
    bind,
    number,
    operand,
    optional_number,
    refs_read,
    tensor_meta,
)

Rule = Callable[[str, RawNode, Context], Normalised]


def unary(kind: str, raw: RawNode, ctx: Context) -> Normalised:
    bound = bind(raw, "input, inplace=False")
    tensor_meta(ctx, bound["input"])
    return Normalised(kind, "pointwise", (operand(bound["input"]),))


def binary(kind: str, raw: RawNode, ctx: Context) -> Normalised:
    signature = {"add": "input, other, alpha=1", "sub": "input, other, alpha=1"}.get(
        kind, "input, other, rounding_mode=None" if kind == "div" else "input, other"
    )
    bound = bind(raw, signature)
    if bound.get("alpha", 1) != 1 or bound.get("rounding_mode") is not None:
        raise Unsupported
    args = (operand(bound["input"]), operand(bound["other"]))
    if not any(a.is_tensor for a in args):
        raise Unsupported
    return Normalised(kind, "pointwise", args)


def with_params(signature: str, names: tuple[str, ...]) -> Rule:
    """A unary op whose params are plain numbers/strings under the same names as torch's."""

    def rule(kind: str, raw: RawNode, ctx: Context) -> Normalised:
        bound = bind(raw, signature)
        tensor_meta(ctx, bound["input"])
        params = {n: bound[n] for n in names}
        for name, value in params.items():
            if not isinstance(value, str):
                params[name] = float(number(value))
        return Normalised(kind, "pointwise", (operand(bound["input"]),), params)

    return rule


def gelu(kind: str, raw: RawNode, ctx: Context) -> Normalised:
    bound = bind(raw, "input, approximate='none'")
    tensor_meta(ctx, bound["input"])
    if bound["approximate"] not in ("none", "tanh"):
        raise Unsupported
    return Normalised(
        "gelu", "pointwise", (operand(bound["input"]),), {"approximate": bound["approximate"]}
    )


def pow_rule(kind: str, raw: RawNode, ctx: Context) -> Normalised:
    bound = bind(raw, "input, exponent")
    tensor_meta(ctx, bound["input"])
    exponent = float(number(bound["exponent"]))
    return Normalised("pow", "pointwise", (operand(bound["input"]),), {"exponent": exponent})


def clamp(kind: str, raw: RawNode, ctx: Context) -> Normalised:
    signature = {"clamp_min": "input, min", "clamp_max": "input, max"}.get(
        kind, "input, min=None, max=None"
    )
    bound = bind(raw, signature)
    tensor_meta(ctx, bound["input"])
    low, high = optional_number(bound.get("min")), optional_number(bound.get("max"))
    low = None if low == float("-inf") else low
    high = None if high == float("inf") else high
    if low is None and high is None:
        raise Unsupported
    params = {
        "min": None if low is None else float(low),
        "max": None if high is None else float(high),
    }
    return Normalised("clamp", "pointwise", (operand(bound["input"]),), params)


def relu6(kind: str, raw: RawNode, ctx: Context) -> Normalised:
    bound = bind(raw, "input, inplace=False")
    tensor_meta(ctx, bound["input"])
    return Normalised(
        "hardtanh", "pointwise", (operand(bound["input"]),), {"min_val": 0.0, "max_val": 6.0}
    )


def identity_like(kind: str, raw: RawNode, ctx: Context) -> Normalised:
    """contiguous/clone/detach/float/to(float32)/type(float32)/dropout that is a no-op."""
    if kind == "dropout":
        if raw.target.startswith("torch."):
            bound = bind(raw, "input, p, train")
            live = bound["train"]
        else:
            bound = bind(raw, "input, p=0.5, training=True, inplace=False")
            live = bound["training"]
        if live is not False and number(bound["p"]) != 0:
            raise Unsupported
    elif kind in ("to", "type"):
        bound = bind(raw, "input, dtype")
        if bound["dtype"] != Opaque("torch.float32"):
            raise Unsupported
    elif kind == "detach":
        bound = bind(raw, "input")
    else:
        bound = bind(raw, "input, memory_format=None")
        if bound["memory_format"] not in (None, Opaque("torch.contiguous_format")):
            raise Unsupported
    meta = tensor_meta(ctx, bound["input"])
    if kind == "contiguous" and not meta.contiguous:
        return Normalised("contiguous", "data_movement", refs_read(raw))
    return Normalised("identity", "pointwise", (operand(bound["input"]),))
