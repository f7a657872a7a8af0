"""The operator vocabulary: which fx calls become which `ir` kind, with which params.

One rule per operator name, shared by its spellings: `operator.add`, `torch.add`,
`Tensor.add` and `x + y` are all "add"; `torch.relu`, `F.relu` and `x.relu()` all "relu";
nn modules (`nn.ReLU`, `nn.LayerNorm`, ...) have their own table, reading the module's
hyper-parameters. The rule is never to guess: a call whose arguments are not exactly
understood (an unknown keyword, `alpha != 1`, a non-float32 pointwise op, an in-place op
whose input is read again, dropout that is live) is kind "other" and its code runs as
written. Operands of "other" and data-movement nodes are the nodes the statement reads.
"""

from __future__ import annotations

from typing import Any

from engine.agents.kernels.capture_modules import module_rule
from engine.agents.kernels.capture_ops import (
    FLOAT32_EPS,
    Context,
    Normalised,
    RawNode,
    Ref,
    Unsupported,
    bind,
    dims,
    int_list,
    number,
    one_dim,
    operand,
    optional_tensor,
    refs_read,
    tensor_meta,
)
from engine.agents.kernels.capture_pointwise import (
    Rule,
    binary,
    clamp,
    gelu,
    identity_like,
    pow_rule,
    relu6,
    unary,
    with_params,
)
from engine.agents.kernels.ir import GraphNode

NAMESPACES = frozenset({"operator", "torch", "F", "special", "linalg", "Tensor"})
ALIASES = {
    "truediv": "div",
    "true_divide": "div",
    "divide": "div",
    "multiply": "mul",
    "subtract": "sub",
    "negative": "neg",
    "absolute": "abs",
    "clip": "clamp",
    "expit": "sigmoid",
    "concat": "cat",
    "concatenate": "cat",
    "swapaxes": "transpose",
    "swapdims": "transpose",
    "t": "transpose",
    "view_as": "view",
    "reshape_as": "reshape",
    "expand_as": "expand",
}
SIMPLE_UNARY = [
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
    "neg",
    "abs",
    "silu",
    "mish",
    "softsign",
    "selu",
    "hardsigmoid",
    "hardswish",
]
DATA_MOVEMENT = frozenset(
    [
        "view",
        "reshape",
        "flatten",
        "permute",
        "transpose",
        "squeeze",
        "unsqueeze",
        "expand",
        "contiguous",
        "cat",
        "getitem",
    ]
)


def node_from_raw(raw: RawNode, ctx: Context) -> GraphNode:
    """The `GraphNode` for one fx node: normalised where understood, else kind "other"."""
    if raw.op == "placeholder":
        result = Normalised("input", "input", (), {"default": raw.args[0]} if raw.args else {})
    elif raw.op == "get_attr":
        result = Normalised("param", "input", ())
    else:
        try:
            result = normalise(raw, ctx)
        except Unsupported:
            result = Normalised("other", "other", refs_read(raw))
    return GraphNode(
        name=raw.name,
        op=raw.op,
        kind=result.kind,
        op_class=result.op_class,  # type: ignore[arg-type]
        args=result.args,
        params=result.params,
        meta=raw.meta,
        code=raw.code,
        target=raw.target,
        attrs=result.attrs,
    )


def normalise(raw: RawNode, ctx: Context) -> Normalised:
    """Raises Unsupported for anything not understood exactly."""
    if raw.op == "call_module":
        result, inplace = module_rule(raw, ctx)
    elif raw.op in ("call_function", "call_method"):
        namespace, _, name = raw.target.rpartition(".")
        inplace = name.endswith("_") and not name.startswith("_")
        name = ALIASES.get(name.rstrip("_"), name.rstrip("_"))
        rule = RULES.get(name)
        if namespace not in NAMESPACES or rule is None:
            raise Unsupported
        inplace = inplace or raw.kwargs.get("inplace") is True
        result = rule(name, raw, ctx)
    else:
        raise Unsupported
    if inplace:
        check_inplace(raw, ctx)
    check_dtypes(result, raw, ctx)
    return result


def check_inplace(raw: RawNode, ctx: Context) -> None:
    """An in-place op equals its out-of-place form only if nothing reads its input again."""
    first = raw.args[0] if raw.args else None
    if not isinstance(first, Ref) or ctx.ops.get(first.name) in ("placeholder", "get_attr"):
        raise Unsupported
    if ctx.users.get(first.name, 0) != 1:
        raise Unsupported


def check_dtypes(result: Normalised, raw: RawNode, ctx: Context) -> None:
    """Generated kernels are float32: pointwise ops and reductions on anything else stay torch."""
    if result.op_class not in ("pointwise", "reduction"):
        return
    tensors = [a for a in result.args if a.node is not None]
    if result.op_class == "reduction":
        tensors = tensors[:1]
    if any(tensor_meta(ctx, Ref(a.node)).dtype != "float32" for a in tensors):  # type: ignore[arg-type]
        raise Unsupported
    int_output = result.kind in ("argmax", "argmin")
    if raw.meta is None or (raw.meta.dtype != "float32" and not int_output):
        raise Unsupported


# -- reductions ---------------------------------------------------------------------------
def reduce_rule(kind: str, raw: RawNode, ctx: Context) -> Normalised:
    if kind in ("max", "min"):
        return max_min(kind, raw, ctx)
    signature = {
        "sum": "input, dim=None, keepdim=False, dtype=None",
        "mean": "input, dim=None, keepdim=False, dtype=None",
        "logsumexp": "input, dim, keepdim=False",
        "argmax": "input, dim=None, keepdim=False",
        "argmin": "input, dim=None, keepdim=False",
    }.get(kind, "input, dim=(), keepdim=False")
    bound = bind(raw, signature)
    if bound.get("dtype") is not None or not isinstance(bound["keepdim"], bool):
        raise Unsupported
    rank = len(tensor_meta(ctx, bound["input"]).shape)
    params = {"dim": dims(bound["dim"], rank, empty_means_all=True), "keepdim": bound["keepdim"]}
    return Normalised(kind, "reduction", (operand(bound["input"]),), params)


def max_min(kind: str, raw: RawNode, ctx: Context) -> Normalised:
    """torch.max(x) reduces everything; torch.max(x, y) is elementwise; torch.max(x, dim)
    returns (values, indices): that stays torch."""
    if len(raw.args) == 1 and not raw.kwargs:
        rank = len(tensor_meta(ctx, raw.args[0]).shape)
        params = {"dim": dims(None, rank), "keepdim": False}
        return Normalised("a" + kind, "reduction", (operand(raw.args[0]),), params)
    bound = bind(raw, "input, other")
    if not isinstance(bound["other"], Ref):
        raise Unsupported
    return binary("maximum" if kind == "max" else "minimum", raw, ctx)


def var(kind: str, raw: RawNode, ctx: Context) -> Normalised:
    bound = bind(raw, "input, dim=None, unbiased=None, keepdim=False, correction=None")
    if bound["unbiased"] is not None and bound["correction"] is not None:
        raise Unsupported
    if isinstance(bound["dim"], bool) or not isinstance(bound["keepdim"], bool):
        raise Unsupported
    correction = bound["correction"]
    if correction is None:
        correction = 0 if bound["unbiased"] is False else 1
    rank = len(tensor_meta(ctx, bound["input"]).shape)
    params = {
        "dim": dims(bound["dim"], rank),
        "keepdim": bound["keepdim"],
        "correction": number(correction),
    }
    return Normalised("var", "reduction", (operand(bound["input"]),), params)


def norm(kind: str, raw: RawNode, ctx: Context) -> Normalised:
    if kind == "vector_norm":
        bound = bind(raw, "input, ord=2, dim=None, keepdim=False, dtype=None")
        p = bound["ord"]
    else:
        bound = bind(raw, "input, p='fro', dim=None, keepdim=False, dtype=None")
        p = bound["p"]
    if (
        p not in (2, 2.0, "fro")
        or bound["dtype"] is not None
        or not isinstance(bound["keepdim"], bool)
    ):
        raise Unsupported
    rank = len(tensor_meta(ctx, bound["input"]).shape)
    params = {"dim": dims(bound["dim"], rank), "keepdim": bound["keepdim"], "p": 2}
    return Normalised("norm", "reduction", (operand(bound["input"]),), params)


def softmax(kind: str, raw: RawNode, ctx: Context) -> Normalised:
    signature = (
        "input, dim=None, _stacklevel=3, dtype=None"
        if raw.target.startswith("F.")
        else "input, dim, dtype=None"
    )
    bound = bind(raw, signature)
    if bound["dim"] is None or bound["dtype"] is not None:
        raise Unsupported
    rank = len(tensor_meta(ctx, bound["input"]).shape)
    return Normalised(
        kind, "reduction", (operand(bound["input"]),), {"dim": one_dim(bound["dim"], rank)}
    )


def normalization(kind: str, raw: RawNode, ctx: Context) -> Normalised:
    signature = {
        "layer_norm": "input, normalized_shape, weight=None, bias=None, eps=1e-05, cudnn_enable=True",
        "rms_norm": "input, normalized_shape, weight=None, eps=None",
        "group_norm": "input, num_groups, weight=None, bias=None, eps=1e-05, cudnn_enabled=True",
    }[kind]
    bound = bind(raw, signature)
    tensor_meta(ctx, bound["input"])
    eps = FLOAT32_EPS if bound["eps"] is None else float(number(bound["eps"]))
    names = ("weight",) if kind == "rms_norm" else ("weight", "bias")
    args = (operand(bound["input"]), *(optional_tensor(bound[n]) for n in names))
    if kind == "group_norm":
        params: dict[str, Any] = {"num_groups": number(bound["num_groups"]), "eps": eps}
    else:
        shape = bound["normalized_shape"]
        shape = [shape] if isinstance(shape, int) else list(shape)
        if not all(isinstance(s, int) for s in shape):
            raise Unsupported
        params = {"normalized_shape": shape, "eps": eps}
    return Normalised(kind, "reduction", args, params)


def batch_norm(kind: str, raw: RawNode, ctx: Context) -> Normalised:
    if not raw.target.startswith("F."):
        raise Unsupported  # torch.batch_norm orders its arguments differently
    signature = "input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-05"
    bound = bind(raw, signature)
    tensor_meta(ctx, bound["input"])
    if not isinstance(bound["training"], bool):
        raise Unsupported
    names = ("running_mean", "running_var", "weight", "bias")
    args = (operand(bound["input"]), *(optional_tensor(bound[n]) for n in names))
    params = {
        "eps": float(number(bound["eps"])),
        "momentum": float(number(bound["momentum"])),
        "training": bound["training"],
    }
    return Normalised("batch_norm", "reduction", args, params)


# -- matmul, conv, data movement ----------------------------------------------------------
def matmul(kind: str, raw: RawNode, ctx: Context) -> Normalised:
    if kind == "linear":
        bound = bind(raw, "input, weight, bias=None")
        args = (operand(bound["input"]), operand(bound["weight"]), optional_tensor(bound["bias"]))
    elif kind == "addmm":
        bound = bind(raw, "input, mat1, mat2, beta=1, alpha=1")
        if bound["beta"] != 1 or bound["alpha"] != 1:
            raise Unsupported
        args = tuple(operand(bound[n]) for n in ("input", "mat1", "mat2"))
    else:
        bound = bind(raw, "input, other")
        args = (operand(bound["input"]), operand(bound["other"]))
    if not all(a.is_tensor for a in args[:2]):
        raise Unsupported
    return Normalised(kind, "matmul", args)


def conv(kind: str, raw: RawNode, ctx: Context) -> Normalised:
    size = int(kind[-2])
    if kind.startswith("conv_transpose"):
        signature = (
            "input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1"
        )
        lists = ("stride", "padding", "output_padding", "dilation")
    else:
        signature = "input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1"
        lists = ("stride", "padding", "dilation")
    bound = bind(raw, signature)
    args = (operand(bound["input"]), operand(bound["weight"]), optional_tensor(bound["bias"]))
    if not all(a.is_tensor for a in args[:2]):
        raise Unsupported
    params: dict[str, Any] = {n: int_list(bound[n], size) for n in lists}
    params["groups"] = number(bound["groups"])
    return Normalised(kind, "conv", args, params)


def data_movement(kind: str, raw: RawNode, ctx: Context) -> Normalised:
    args = refs_read(raw)
    if raw.meta is None or not args or ctx.metas.get(args[0].node or "") is None:
        raise Unsupported  # e.g. getitem of a tuple or of x.shape
    return Normalised(kind, "data_movement", args)


RULES: dict[str, Rule] = {
    **{name: unary for name in SIMPLE_UNARY},
    **{name: binary for name in ("add", "sub", "mul", "div", "maximum", "minimum")},
    "gelu": gelu,
    "softplus": with_params("input, beta=1.0, threshold=20.0", ("beta", "threshold")),
    "elu": with_params("input, alpha=1.0, inplace=False", ("alpha",)),
    "celu": with_params("input, alpha=1.0, inplace=False", ("alpha",)),
    "leaky_relu": with_params("input, negative_slope=0.01, inplace=False", ("negative_slope",)),
    "hardtanh": with_params(
        "input, min_val=-1.0, max_val=1.0, inplace=False", ("min_val", "max_val")
    ),
    "relu6": relu6,
    "pow": pow_rule,
    **{name: clamp for name in ("clamp", "clamp_min", "clamp_max")},
    **{name: identity_like for name in ("clone", "detach", "float", "to", "type", "dropout")},
    **{
        name: reduce_rule
        for name in ("sum", "mean", "amax", "amin", "logsumexp", "argmax", "argmin", "max", "min")
    },
    "var": var,
    "norm": norm,
    "vector_norm": norm,
    "softmax": softmax,
    "log_softmax": softmax,
    **{name: normalization for name in ("layer_norm", "rms_norm", "group_norm")},
    "batch_norm": batch_norm,
    **{name: matmul for name in ("linear", "matmul", "mm", "bmm", "addmm")},
    **{f"conv{n}d": conv for n in (1, 2, 3)},
    **{f"conv_transpose{n}d": conv for n in (1, 2, 3)},
    **{name: data_movement for name in DATA_MOVEMENT - {"contiguous"}},
    "contiguous": identity_like,
}
