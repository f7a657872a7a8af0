"""Per-element math of the GPU code generators: each operator's formula written once, over the
primitives a backend spells its own way (`TritonSyntax`: `tl.` calls; `CudaSyntax`: CUDA C
float functions).

Why one table for both backends: the formulas are PyTorch's (gelu's erf and tanh forms,
softplus's threshold, selu's constants, hardswish, mish, relu and clamp letting NaN through),
and writing them once keeps the Triton and CUDA kernels agreeing with torch and with each
other. Operands are always variable names (the generators compute one value per statement),
so a formula may repeat them.

Row reductions are described the same way (`row_recipe`): the per-row statistics to
accumulate (sum/max/min of a per-element expression, then a finishing expression) and the
value of the reduction per row or per element, which each backend turns into loops.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

# PyTorch's constants (aten/src/ATen/native/Activation.h, UnaryOps).
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
GELU_TANH_BETA = math.sqrt(2.0) * (2.0 / math.sqrt(math.pi)) * 0.5
GELU_TANH_KAPPA = 0.044715
FLOAT32_EPS = 1.1920928955078125e-07  # torch.finfo(torch.float32).eps: rms_norm's eps=None


class GpuSyntax(ABC):
    """The primitives the formulas use, spelled for one backend."""

    name: str

    @abstractmethod
    def lit(self, value: float) -> str: ...

    @abstractmethod
    def fn(self, name: str, *args: str) -> str:
        """A math function by its neutral name: exp log sqrt rsqrt erf sin cos abs tanh log1p."""

    @abstractmethod
    def where(self, cond: str, a: str, b: str) -> str: ...

    @abstractmethod
    def maximum(self, a: str, b: str) -> str:
        """max(a, b), NaN if either is NaN (torch.maximum)."""

    @abstractmethod
    def minimum(self, a: str, b: str) -> str: ...


class TritonSyntax(GpuSyntax):
    name = "triton"
    # Not in triton.language proper (libdevice has them, but Triton's CPU interpreter cannot
    # run libdevice): small @triton.jit helpers the generator emits when a kernel uses them.
    HELPERS = {
        "tanh": (
            "@triton.jit\n"
            "def _stark_tanh(x):\n"
            "    # sign(x) * (1 - e^-2|x|) / (1 + e^-2|x|): no overflow for large |x|\n"
            "    e = tl.exp(-2.0 * tl.abs(x))\n"
            "    t = (1.0 - e) / (1.0 + e)\n"
            "    return tl.where(x < 0, -t, t)\n"
        ),
        "log1p": (
            "@triton.jit\n"
            "def _stark_log1p(x):\n"
            "    # log(u) * x / (u - 1) with u = 1 + x corrects u's rounding (Goldberg)\n"
            "    u = 1.0 + x\n"
            "    return tl.where(u == 1.0, x, tl.log(u) * x / (u - 1.0))\n"
        ),
    }
    _NATIVE = {"exp", "log", "sqrt", "rsqrt", "erf", "sin", "cos", "abs"}

    def lit(self, value: float) -> str:
        value = float(value)
        if math.isnan(value):
            return 'float("nan")'
        if math.isinf(value):
            return 'float("inf")' if value > 0 else '(-float("inf"))'
        text = repr(value)
        return f"({text})" if value < 0 else text

    def fn(self, name: str, *args: str) -> str:
        joined = ", ".join(args)
        if name in self._NATIVE:
            return f"tl.{name}({joined})"
        if name in self.HELPERS:
            return f"_stark_{name}({joined})"
        raise KeyError(f"no Triton spelling for {name}")

    def where(self, cond: str, a: str, b: str) -> str:
        return f"tl.where({cond}, {a}, {b})"

    def maximum(self, a: str, b: str) -> str:
        return f"tl.maximum({a}, {b}, propagate_nan=tl.PropagateNan.ALL)"

    def minimum(self, a: str, b: str) -> str:
        return f"tl.minimum({a}, {b}, propagate_nan=tl.PropagateNan.ALL)"


class CudaSyntax(GpuSyntax):
    name = "cuda"
    _FUNCTIONS = {
        "exp": "expf",
        "log": "logf",
        "sqrt": "sqrtf",
        "rsqrt": "rsqrtf",
        "erf": "erff",
        "sin": "sinf",
        "cos": "cosf",
        "abs": "fabsf",
        "tanh": "tanhf",
        "log1p": "log1pf",
        "expm1": "expm1f",
        "pow": "powf",
    }

    def lit(self, value: float) -> str:
        value = float(value)
        if math.isnan(value):
            return "NAN"
        if math.isinf(value):
            return "INFINITY" if value > 0 else "(-INFINITY)"
        text = repr(value)
        if "e" not in text and "." not in text:
            text += ".0"
        return f"({text}f)" if value < 0 else f"{text}f"

    def fn(self, name: str, *args: str) -> str:
        return f"{self._FUNCTIONS[name]}({', '.join(args)})"

    def where(self, cond: str, a: str, b: str) -> str:
        return f"(({cond}) ? ({a}) : ({b}))"

    def maximum(self, a: str, b: str) -> str:
        return f"stark_maximum({a}, {b})"

    def minimum(self, a: str, b: str) -> str:
        return f"stark_minimum({a}, {b})"


def _expm1(s: GpuSyntax, a: str) -> str:
    return s.fn("expm1", a) if s.name == "cuda" else f"({s.fn('exp', a)} - 1.0)"


def _clamp(s: GpuSyntax, a: str, lo: Any, hi: Any) -> str:
    """torch.clamp: min(max(a, lo), hi), NaN passing through (comparisons with NaN fail)."""
    out = a
    if lo is not None:
        out = s.where(f"{out} < {s.lit(lo)}", s.lit(lo), out)
    if hi is not None:
        out = s.where(f"{out} > {s.lit(hi)}", s.lit(hi), out)
    return out


def _elu(s: GpuSyntax, a: str, alpha: float, scale: float, input_scale: float) -> str:
    """torch's elu family: x <= 0 ? expm1(x * input_scale) * alpha * scale : x * scale."""
    scaled = a if input_scale == 1.0 else f"{a} * {s.lit(input_scale)}"
    negative = f"{_expm1(s, scaled)} * {s.lit(alpha * scale)}"
    positive = a if scale == 1.0 else f"{a} * {s.lit(scale)}"
    return s.where(f"{a} <= {s.lit(0.0)}", negative, positive)


def _pow(s: GpuSyntax, a: str, exponent: Any) -> str:
    """torch.pow's special cases (x*x, sqrt, rsqrt, 1/x ...), else exp(e * log|x|)."""
    e = float(exponent)
    special = {
        0.0: s.lit(1.0),
        1.0: a,
        2.0: f"{a} * {a}",
        3.0: f"{a} * {a} * {a}",
        0.5: s.fn("sqrt", a),
        -0.5: s.fn("rsqrt", a),
        -1.0: f"{s.lit(1.0)} / {a}",
        -2.0: f"{s.lit(1.0)} / ({a} * {a})",
    }
    if e in special:
        return special[e]
    if s.name == "cuda":
        return s.fn("pow", a, s.lit(e))
    if not e.is_integer():
        return s.fn("exp", f"{s.lit(e)} * {s.fn('log', a)}")  # NaN for a < 0, like torch
    magnitude = s.fn("exp", f"{s.lit(e)} * {s.fn('log', s.fn('abs', a))}")
    return s.where(f"{a} < 0", f"-{magnitude}", magnitude) if e % 2 else magnitude


def _sigmoid(s: GpuSyntax, a: str) -> str:
    if s.name == "triton":
        return f"tl.sigmoid({a})"
    return f"1.0f / (1.0f + {s.fn('exp', f'-{a}')})"


def _gelu(s: GpuSyntax, a: str, approximate: str) -> str:
    if approximate == "tanh":
        inner = f"{s.lit(GELU_TANH_BETA)} * ({a} + {s.lit(GELU_TANH_KAPPA)} * {a} * {a} * {a})"
        return f"{s.lit(0.5)} * {a} * ({s.lit(1.0)} + {s.fn('tanh', inner)})"
    if approximate != "none":
        raise ValueError(f"gelu approximate={approximate!r} is not 'none' or 'tanh'")
    return f"{a} * {s.lit(0.5)} * ({s.lit(1.0)} + {s.fn('erf', f'{a} * {s.lit(math.sqrt(0.5))}')})"


def _softplus(s: GpuSyntax, a: str, beta: float, threshold: float) -> str:
    """torch: x * beta > threshold ? x : log1p(exp(x * beta)) / beta."""
    scaled = a if float(beta) == 1.0 else f"{a} * {s.lit(beta)}"
    soft = s.fn("log1p", s.fn("exp", scaled))
    if float(beta) != 1.0:
        soft = f"{soft} / {s.lit(beta)}"
    return s.where(f"{scaled} > {s.lit(threshold)}", a, soft)


def _hard_gate(s: GpuSyntax, a: str) -> str:
    """min(max(x + 3, 0), 6) / 6, hardsigmoid's and hardswish's gate."""
    shifted = f"({a} + {s.lit(3.0)})"
    low = s.where(f"{shifted} < {s.lit(0.0)}", s.lit(0.0), shifted)
    return f"{s.where(f'{low} > {s.lit(6.0)}', s.lit(6.0), low)} / {s.lit(6.0)}"


UnaryFormula = Callable[[GpuSyntax, str, dict[str, Any]], str]
UNARY: dict[str, UnaryFormula] = {
    "neg": lambda s, a, p: f"-{a}",
    "abs": lambda s, a, p: s.fn("abs", a),
    "relu": lambda s, a, p: s.where(f"{a} < {s.lit(0.0)}", s.lit(0.0), a),
    "sigmoid": lambda s, a, p: _sigmoid(s, a),
    "tanh": lambda s, a, p: s.fn("tanh", a),
    "exp": lambda s, a, p: s.fn("exp", a),
    "log": lambda s, a, p: s.fn("log", a),
    "log1p": lambda s, a, p: s.fn("log1p", a),
    "sqrt": lambda s, a, p: s.fn("sqrt", a),
    "rsqrt": lambda s, a, p: s.fn("rsqrt", a),
    "reciprocal": lambda s, a, p: f"{s.lit(1.0)} / {a}",
    "erf": lambda s, a, p: s.fn("erf", a),
    "sin": lambda s, a, p: s.fn("sin", a),
    "cos": lambda s, a, p: s.fn("cos", a),
    "square": lambda s, a, p: f"{a} * {a}",
    "gelu": lambda s, a, p: _gelu(s, a, p.get("approximate", "none")),
    "silu": lambda s, a, p: f"{a} * {_sigmoid(s, a)}",
    "mish": lambda s, a, p: f"{a} * {s.fn('tanh', s.fn('log1p', s.fn('exp', a)))}",
    "softsign": lambda s, a, p: f"{a} / ({s.lit(1.0)} + {s.fn('abs', a)})",
    "selu": lambda s, a, p: _elu(s, a, SELU_ALPHA, SELU_SCALE, 1.0),
    "hardsigmoid": lambda s, a, p: _hard_gate(s, a),
    "hardswish": lambda s, a, p: f"{a} * {_hard_gate(s, a)}",
    "softplus": lambda s, a, p: _softplus(s, a, p.get("beta", 1.0), p.get("threshold", 20.0)),
    "elu": lambda s, a, p: _elu(s, a, float(p.get("alpha", 1.0)), 1.0, 1.0),
    "celu": lambda s, a, p: _elu(s, a, float(p.get("alpha", 1.0)), 1.0, 1.0 / p.get("alpha", 1.0)),
    "leaky_relu": lambda s, a, p: s.where(
        f"{a} > {s.lit(0.0)}", a, f"{a} * {s.lit(p.get('negative_slope', 0.01))}"
    ),
    "hardtanh": lambda s, a, p: _clamp(s, a, p.get("min_val", -1.0), p.get("max_val", 1.0)),
    "clamp": lambda s, a, p: _clamp(s, a, p.get("min"), p.get("max")),
    "pow": lambda s, a, p: _pow(s, a, p["exponent"]),
    "identity": lambda s, a, p: a,
}

BinaryFormula = Callable[[GpuSyntax, str, str], str]
BINARY: dict[str, BinaryFormula] = {
    "add": lambda s, a, b: f"{a} + {b}",
    "sub": lambda s, a, b: f"{a} - {b}",
    "mul": lambda s, a, b: f"{a} * {b}",
    "div": lambda s, a, b: f"{a} / {b}",
    "maximum": lambda s, a, b: s.maximum(a, b),
    "minimum": lambda s, a, b: s.minimum(a, b),
}


def formula_problem(kind: str, params: dict[str, Any]) -> str | None:
    """Why `kind` has no formula here (None when it has one)."""
    if kind not in UNARY and kind not in BINARY:
        return f"no GPU formula for {kind!r}"
    if kind == "gelu" and params.get("approximate", "none") not in ("none", "tanh"):
        return f"gelu approximate={params.get('approximate')!r}"
    if kind == "pow" and not isinstance(params.get("exponent"), int | float):
        return "pow with a tensor exponent"
    if kind == "celu" and float(params.get("alpha", 1.0)) == 0.0:
        return "celu with alpha=0"
    return None


def pointwise_expr(s: GpuSyntax, kind: str, operands: list[str], params: dict[str, Any]) -> str:
    """The expression of one pointwise node over its operand expressions."""
    if kind in UNARY:
        return UNARY[kind](s, operands[0], params)
    if kind in BINARY:
        return BINARY[kind](s, operands[0], operands[1])
    raise KeyError(f"no GPU formula for {kind!r}")


Combine = Literal["sum", "max", "min"]


@dataclass(frozen=True, slots=True)
class RowStat:
    """One per-row statistic: `var` = finish(combine over the row of `element`)."""

    var: str
    combine: Combine
    element: str  # per-element expression; may read earlier stats' vars
    finish: str  # expression of the combined total, spelled "{total}"


@dataclass(frozen=True, slots=True)
class RowRecipe:
    stats: tuple[RowStat, ...]
    row_value: str | None = None  # the reduction's value per row (sum, mean, ...)
    element_value: str | None = None  # or per element (softmax, layer_norm, ...)


ROW_REDUCTIONS = frozenset(
    ["sum", "mean", "amax", "amin", "logsumexp", "var", "norm", "softmax", "log_softmax"]
    + ["layer_norm", "rms_norm"]
)


def row_recipe(
    s: GpuSyntax,
    kind: str,
    params: dict[str, Any],
    x: str,
    cols: int,
    weight: str | None = None,
    bias: str | None = None,
    eps_default: float = FLOAT32_EPS,
) -> RowRecipe:
    """How to compute reduction `kind` of the rows of `x` (a variable), `cols` wide."""
    n = s.lit(float(cols))
    total = "{total}"
    if kind in ("sum", "mean", "amax", "amin"):
        combine: Combine = {"amax": "max", "amin": "min"}.get(kind, "sum")  # type: ignore[assignment]
        finish = f"{total} / {n}" if kind == "mean" else total
        return RowRecipe((RowStat("row_" + kind, combine, x, finish),), row_value="row_" + kind)
    if kind == "norm":
        p = float(params.get("p", 2))
        if p == 1.0:
            return RowRecipe((RowStat("row_norm", "sum", s.fn("abs", x), total),), "row_norm")
        square = RowStat("row_norm", "sum", f"{x} * {x}", s.fn("sqrt", total))
        return RowRecipe((square,), row_value="row_norm")
    if kind in ("var", "layer_norm"):
        mean = RowStat("row_mean", "sum", x, f"{total} / {n}")
        dev = f"({x} - row_mean) * ({x} - row_mean)"
        if kind == "var":
            divisor = s.lit(float(cols - params.get("correction", 1)))
            return RowRecipe(
                (mean, RowStat("row_var", "sum", dev, f"{total} / {divisor}")), "row_var"
            )
        eps = s.lit(float(params.get("eps", 1e-5)))
        rstd = RowStat("row_rstd", "sum", dev, s.fn("rsqrt", f"{total} / {n} + {eps}"))
        value = f"({x} - row_mean) * row_rstd"
        value = f"{value} * {weight}" if weight else value
        value = f"{value} + {bias}" if bias else value
        return RowRecipe((mean, rstd), element_value=value)
    if kind == "rms_norm":
        eps_value = params.get("eps")
        eps = s.lit(float(eps_default if eps_value is None else eps_value))
        rstd = RowStat("row_rstd", "sum", f"{x} * {x}", s.fn("rsqrt", f"{total} / {n} + {eps}"))
        value = f"{x} * row_rstd" + (f" * {weight}" if weight else "")
        return RowRecipe((rstd,), element_value=value)
    if kind in ("softmax", "log_softmax", "logsumexp"):
        # The max is taken out first; an infinite max is replaced by 0 as torch does, so a
        # row of -inf gives -inf (logsumexp) rather than NaN from inf - inf.
        inf = s.lit(math.inf)
        safe_max = s.where(f"{s.fn('abs', total)} == {inf}", s.lit(0.0), total)
        row_max = RowStat("row_max", "max", x, safe_max if kind == "logsumexp" else total)
        row_sum = RowStat("row_sum", "sum", s.fn("exp", f"{x} - row_max"), total)
        if kind == "logsumexp":
            return RowRecipe((row_max, row_sum), row_value=f"row_max + {s.fn('log', 'row_sum')}")
        if kind == "softmax":
            return RowRecipe(
                (row_max, row_sum), element_value=f"{s.fn('exp', f'{x} - row_max')} / row_sum"
            )
        return RowRecipe(
            (row_max, row_sum), element_value=f"{x} - row_max - {s.fn('log', 'row_sum')}"
        )
    raise KeyError(f"{kind!r} is not a row reduction the GPU generators write")
