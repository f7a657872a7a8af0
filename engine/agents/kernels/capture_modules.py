"""nn module calls (`self.gemm(x)`) normalised to the `ir` vocabulary.

A module's tensors are not operands: they appear in `attrs` by their attribute path
("self.gemm.weight"), so generated code reads the reference's own weights; `args` holds only
the module's input. A module the table does not know is kind "other".
"""

from __future__ import annotations

from typing import Any

from engine.agents.kernels.capture_ops import (
    FLOAT32_EPS,
    Context,
    Normalised,
    RawNode,
    Unsupported,
    int_list,
    number,
    one_dim,
    operand,
    tensor_meta,
)

SIMPLE = {
    "ReLU": "relu",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "SiLU": "silu",
    "Mish": "mish",
    "Softsign": "softsign",
    "SELU": "selu",
    "Hardsigmoid": "hardsigmoid",
    "Hardswish": "hardswish",
}
# kind, then the module attributes that are its float params (same names as the ir's)
WITH_PARAMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "Softplus": ("softplus", ("beta", "threshold")),
    "ELU": ("elu", ("alpha",)),
    "CELU": ("celu", ("alpha",)),
    "LeakyReLU": ("leaky_relu", ("negative_slope",)),
    "Hardtanh": ("hardtanh", ("min_val", "max_val")),
    "ReLU6": ("hardtanh", ("min_val", "max_val")),
}
DROPOUTS = frozenset({"Dropout", "Dropout1d", "Dropout2d", "Dropout3d"})
BATCH_NORMS = frozenset({"BatchNorm1d", "BatchNorm2d", "BatchNorm3d"})
CONVS = {f"Conv{n}d": f"conv{n}d" for n in (1, 2, 3)} | {
    f"ConvTranspose{n}d": f"conv_transpose{n}d" for n in (1, 2, 3)
}


def module_rule(raw: RawNode, ctx: Context) -> tuple[Normalised, bool]:
    """(the normalised node, whether the module works in place); Unsupported if unknown."""
    info = raw.module
    namespace, _, name = raw.target.rpartition(".")
    if info is None or namespace != "nn" or len(raw.args) != 1 or raw.kwargs:
        raise Unsupported
    const = info.constants
    x = raw.args[0]
    tensor_meta(ctx, x)
    args = (operand(x),)
    attrs = {t: f"{info.path}.{t}" for t in info.tensors}
    inplace = const.get("inplace") is True
    if name in SIMPLE:
        return Normalised(SIMPLE[name], "pointwise", args), inplace
    if name in WITH_PARAMS:
        kind, names = WITH_PARAMS[name]
        params = {n: float(number(const.get(n))) for n in names}
        return Normalised(kind, "pointwise", args, params), inplace
    if name == "GELU":
        if const.get("approximate") not in ("none", "tanh"):
            raise Unsupported
        return Normalised("gelu", "pointwise", args, {"approximate": const["approximate"]}), False
    if name == "Identity" or (name in DROPOUTS and (not info.training or const.get("p") == 0)):
        return Normalised("identity", "pointwise", args), False
    if name in ("Softmax", "LogSoftmax"):
        rank = len(tensor_meta(ctx, x).shape)
        params = {"dim": one_dim(const.get("dim"), rank)}
        return Normalised(
            "softmax" if name == "Softmax" else "log_softmax", "reduction", args, params
        ), False
    if name == "Flatten":
        return Normalised("flatten", "data_movement", args), False
    if name == "Linear":
        return Normalised("linear", "matmul", args, {}, attrs), False
    if name in CONVS:
        return conv_module(CONVS[name], args, attrs, const), False
    return normalization_module(name, info.training, args, attrs, const), False


def conv_module(kind: str, args: tuple, attrs: dict[str, str], const: dict[str, Any]) -> Normalised:
    if const.get("padding_mode", "zeros") != "zeros":
        raise Unsupported
    size = int(kind[-2])
    lists = ["stride", "padding", "dilation"]
    if kind.startswith("conv_transpose"):
        lists.append("output_padding")
    params: dict[str, Any] = {n: int_list(const.get(n), size) for n in lists}
    params["groups"] = number(const.get("groups"))
    return Normalised(kind, "conv", args, params, attrs)


def normalization_module(
    name: str, training: bool, args: tuple, attrs: dict[str, str], const: dict[str, Any]
) -> Normalised:
    eps = const.get("eps")
    if name in ("LayerNorm", "RMSNorm"):
        shape = list(const.get("normalized_shape") or ())
        params: dict[str, Any] = {
            "normalized_shape": shape,
            "eps": FLOAT32_EPS if eps is None else float(number(eps)),
        }
        return Normalised(
            "layer_norm" if name == "LayerNorm" else "rms_norm", "reduction", args, params, attrs
        )
    if name == "GroupNorm":
        params = {"num_groups": number(const.get("num_groups")), "eps": float(number(eps))}
        return Normalised("group_norm", "reduction", args, params, attrs)
    if name in BATCH_NORMS:
        momentum = const.get("momentum")
        if momentum is None:
            raise Unsupported  # a cumulative average over num_batches_tracked
        # nn.BatchNorm normalises with the batch's statistics when training or untracked
        live = training or not const.get("track_running_stats", True)
        params = {"eps": float(number(eps)), "momentum": float(number(momentum)), "training": live}
        return Normalised("batch_norm", "reduction", args, params, attrs)
    raise Unsupported
