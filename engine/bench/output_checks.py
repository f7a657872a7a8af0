"""Is a candidate's output the reference's? Structure, exact type, shape, dtype, device,
NaN/Inf, tolerance, a tighter bound where the tolerance dwarfs the reference's own scale;
and did the candidate leave its inputs untouched and return new tensors?

The torch functions used here are bound when this module is imported (in the fork
server, long before any candidate code runs), so a candidate that replaces
`torch.allclose` or `Tensor.abs` cannot change a verdict.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Any

import torch

# Captured originals (see module docstring).
_Tensor = torch.Tensor
_detach = torch.Tensor.detach
_equal = torch.equal
_all = torch.all
_le = torch.le
_eq = torch.eq
_mul = torch.mul
_sum = torch.sum
_isnan = torch.isnan
_logical_or = torch.logical_or
_isfinite = torch.isfinite
_abs = torch.abs
_sub = torch.sub
_amax = torch.amax
_ne = torch.ne
_reshape = torch.reshape
_mean = torch.mean
_any = torch.any
_logical_and = torch.logical_and
_logical_not = torch.logical_not
_where = torch.where
_contiguous = torch.Tensor.contiguous
_view = torch.Tensor.view
_to = torch.Tensor.to
_item = torch.Tensor.item
_numel = torch.Tensor.numel
_untyped_storage = torch.Tensor.untyped_storage
_is_floating_point = torch.Tensor.is_floating_point
_is_complex = torch.Tensor.is_complex

HALF_DTYPES = (torch.float16, torch.bfloat16)
# Tight bound when the tolerance band is large next to the reference's scale.
TIGHT_REL_FP32 = 1e-2
TIGHT_REL_HALF = 5e-2
TOLERANCE_DWARFS_SCALE = 0.1


class CheckFailure(Exception):
    """The candidate's output is wrong; the message is the verdict's error."""

    def __init__(
        self, message: str, flag: str | None = None, stats: TrialStats | None = None
    ) -> None:
        super().__init__(message)
        self.flag = flag
        self.stats = stats  # the failing trial's errors, when they were measured


@dataclass
class TrialStats:
    max_abs_err: float = 0.0
    mean_abs_err: float = 0.0

    def merge(self, other: TrialStats) -> None:
        self.max_abs_err = max(self.max_abs_err, other.max_abs_err)
        self.mean_abs_err = max(self.mean_abs_err, other.mean_abs_err)


@dataclass
class Tolerance:
    atol: float
    rtol: float
    tight_rel: float

    @classmethod
    def for_dtype(cls, dtype: torch.dtype, atol: float | None, rtol: float | None) -> Tolerance:
        half = dtype in HALF_DTYPES
        default = 1e-2 if half else 1e-4
        return cls(
            atol=default if atol is None else atol,
            rtol=default if rtol is None else rtol,
            tight_rel=TIGHT_REL_HALF if half else TIGHT_REL_FP32,
        )


# -- checks ---------------------------------------------------------------------
def as_tensor_list(out: Any, who: str) -> list[Any]:
    if isinstance(out, list | tuple):
        return list(out)
    if isinstance(out, _Tensor):
        return [out]
    raise CheckFailure(
        f"{who} returned {type(out).__name__}, expected a tensor or tuple of tensors"
    )


def _storage_span(t: torch.Tensor) -> tuple[int, int] | None:
    try:
        storage = _untyped_storage(t)
    except (RuntimeError, TypeError):
        return None
    start = storage.data_ptr()
    return (start, start + storage.nbytes()) if storage.nbytes() else None


def check_no_alias(outputs: list[Any], inputs: list[Any]) -> None:
    spans = [s for x in inputs if isinstance(x, _Tensor) and (s := _storage_span(x))]
    for i, out in enumerate(outputs):
        if not isinstance(out, _Tensor):
            continue
        span = _storage_span(out)
        if span and any(span[0] < hi and lo < span[1] for lo, hi in spans):
            raise CheckFailure(
                f"output {i} aliases an input (shares its memory); outputs must be new tensors",
                "output_aliases_input",
            )


def bit_view(t: torch.Tensor) -> torch.Tensor:
    """Bitwise view, so NaN compares equal to itself (bool has no uint8 view: compared as is)."""
    flat = _reshape(_contiguous(_detach(t)), (-1,))
    return _view(flat, torch.uint8) if t.dtype != torch.bool else flat


def check_inputs_unchanged(inputs: list[Any], pristine: list[Any]) -> None:
    for i, (now, before) in enumerate(zip(inputs, pristine, strict=True)):
        if isinstance(before, _Tensor):
            same = (
                isinstance(now, _Tensor)
                and now.shape == before.shape
                and now.dtype == before.dtype
                and _equal(bit_view(now), bit_view(before))
            )
            if not same:
                raise CheckFailure(
                    f"candidate modified its inputs (input {i} changed)", "modified_inputs"
                )


def _all_finite(t: torch.Tensor) -> bool:
    """One fast pass: a finite sum proves every element finite (NaN and Inf propagate);
    only an overflowing or non-finite sum needs the exact elementwise check."""
    total = complex(_item(_sum(t)))
    if math.isfinite(total.real) and math.isfinite(total.imag):
        return True
    return bool(_all(_isfinite(t)))


def _compare_tensor(
    i: int, new: Any, ref: torch.Tensor, tol_cfg: tuple[float | None, float | None]
) -> TrialStats:
    where = f"output {i}"
    if type(new) is not _Tensor:
        raise CheckFailure(
            f"{where} is {type(new).__module__}.{type(new).__qualname__}, not exactly torch.Tensor",
            "tensor_subclass" if isinstance(new, _Tensor) else None,
        )
    if tuple(new.shape) != tuple(ref.shape):
        raise CheckFailure(f"{where}: shape {tuple(new.shape)} != expected {tuple(ref.shape)}")
    if new.dtype != ref.dtype:
        raise CheckFailure(f"{where}: dtype {new.dtype} != expected {ref.dtype}")
    if new.device != ref.device:
        raise CheckFailure(f"{where}: device {new.device} != expected {ref.device}")
    if _numel(ref) == 0:
        return TrialStats()
    if not (_is_floating_point(ref) or _is_complex(ref)):
        if not _equal(new, ref):
            raise CheckFailure(
                f"{where}: values differ from the reference ({ref.dtype} must match exactly)"
            )
        return TrialStats()

    tol = Tolerance.for_dtype(ref.dtype, *tol_cfg)
    # fp32 (or wider/complex) working copies: exact enough, and no copy at all for fp32.
    work = torch.promote_types(ref.dtype, torch.float32)
    ref_w, new_w = _to(ref, work), _to(new, work)
    if _all_finite(ref_w) and _all_finite(new_w):  # the common case: no masks needed
        diff = _abs(_sub(new_w, ref_w))
        ref_abs = _abs(ref_w)
    else:
        ref_finite, new_finite = _isfinite(ref_w), _isfinite(new_w)
        if bool(_any(_logical_and(_logical_not(new_finite), ref_finite))):
            raise CheckFailure(f"{where}: NaN/Inf where the reference is finite")
        same_special = _logical_or(_eq(new_w, ref_w), _logical_and(_isnan(new_w), _isnan(ref_w)))
        if bool(_any(_logical_and(_logical_not(ref_finite), _logical_not(same_special)))):
            raise CheckFailure(f"{where}: differs where the reference is NaN/Inf")
        both = _logical_and(ref_finite, new_finite)
        diff = _where(both, _abs(_sub(new_w, ref_w)), 0.0)
        ref_abs = _where(ref_finite, _abs(ref_w), 0.0)
    max_err = float(_item(_amax(diff)))
    mean_err = float(_item(_mean(diff)))
    stats = TrialStats(max_err, mean_err)
    # torch.allclose semantics, |new - ref| <= atol + rtol * |ref|, reusing `diff` (one pass
    # instead of allclose's many; this compare dominates the harness time on big outputs).
    band = _mul(ref_abs, tol.rtol)
    band += tol.atol
    if not bool(_all(_le(diff, band))):
        raise CheckFailure(
            f"{where}: mismatch, max abs err {max_err:.3g} exceeds atol={tol.atol:g} rtol={tol.rtol:g}",
            stats=stats,
        )
    del band
    scale = float(_item(_amax(ref_abs)))
    if scale > 0 and tol.atol > TOLERANCE_DWARFS_SCALE * scale:
        # The tolerance alone would accept almost anything here (e.g. zeros for a ~1e-6 output).
        first_new = _reshape(new_w, (-1,))[0]
        ref_varies = bool(_any(_ne(ref_w, _reshape(ref_w, (-1,))[0])))
        new_constant = not bool(_any(_ne(new_w, first_new)))
        if ref_varies and new_constant:
            raise CheckFailure(
                f"{where}: constant output ({_item(first_new):.3g}) while the reference "
                f"varies at scale {scale:.3g}; it passed only because atol={tol.atol:g} dwarfs it",
                "near_zero_output",
                stats,
            )
        if max_err > tol.tight_rel * scale:
            raise CheckFailure(
                f"{where}: max abs err {max_err:.3g} is {max_err / scale:.0%} of the reference's "
                f"scale {scale:.3g}; the output passes atol={tol.atol:g} only because the "
                "reference is near zero",
                "near_zero_output",
                stats,
            )
    return stats


def compare_outputs(
    new_out: Any, ref_out: Any, atol: float | None, rtol: float | None, spot_check: int = 0
) -> TrialStats:
    """All output checks except aliasing/inputs; raises CheckFailure with a one-line reason.
    With `spot_check=k`, values are compared on k secret random elements per output only
    (used on every timing round, where a full compare would cost more than the kernel)."""
    refs = as_tensor_list(ref_out, "reference")
    if isinstance(new_out, _Tensor) != isinstance(ref_out, _Tensor) and not isinstance(
        new_out, list | tuple
    ):
        raise CheckFailure(
            f"candidate returned {type(new_out).__name__}, expected "
            f"{'a tensor' if isinstance(ref_out, _Tensor) else f'a sequence of {len(refs)}'}"
        )
    news = as_tensor_list(new_out, "candidate")
    if len(news) != len(refs) or isinstance(new_out, _Tensor) != isinstance(ref_out, _Tensor):
        raise CheckFailure(
            f"candidate returned {len(news)} output(s) as {type(new_out).__name__}, "
            f"expected {len(refs)} as {type(ref_out).__name__}"
        )
    if _container_kind(new_out) != _container_kind(ref_out):
        raise CheckFailure(
            f"candidate returned a {_container_kind(new_out)}, the reference a "
            f"{_container_kind(ref_out)}; code that uses the model's output may depend on which"
        )
    total = TrialStats()
    for i, (new, ref) in enumerate(zip(news, refs, strict=True)):
        if isinstance(ref, _Tensor):
            if spot_check and type(new) is _Tensor and new.shape == ref.shape:
                new, ref = _sample_pair(new, ref, spot_check)
            total.merge(_compare_tensor(i, new, ref, (atol, rtol)))
        elif new != ref:
            raise CheckFailure(f"output {i}: {new!r} != expected {ref!r}")
    return total


def _container_kind(out: Any) -> str:
    """tuple (named tuples and torch's return types included), list, or what it is."""
    if isinstance(out, tuple):
        return "tuple"
    if isinstance(out, list):
        return "list"
    return "tensor" if isinstance(out, _Tensor) else type(out).__name__


def _sample_pair(new: torch.Tensor, ref: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same k secret random elements of both (checks stay exact on type/shape/dtype)."""
    numel = _numel(ref)
    if numel <= k:
        return new, ref
    generator = torch.Generator(device=ref.device)
    generator.manual_seed(secrets.randbits(63))
    index = torch.randint(numel, (k,), generator=generator, device=ref.device)
    return _reshape(new, (-1,))[index], _reshape(ref, (-1,))[index]
