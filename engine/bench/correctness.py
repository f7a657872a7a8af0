"""Correctness checks: is the candidate's output the reference's, honestly computed?

Every trial draws inputs from a fresh secret seed, gives each side its own
clone, runs the CANDIDATE FIRST (so the allocator cannot hand it the
reference's freshly freed answer) and then checks structure, exact type, shape,
dtype, device, NaN/Inf, tolerance, untouched inputs, no aliasing, a tighter
bound where the tolerance dwarfs the reference's own scale, and that no Python
thread is still working after `forward` returned.

The torch functions used for comparing are bound when this module is imported
(in the fork server, long before any candidate code runs), so a candidate that
replaces `torch.allclose` or `Tensor.abs` cannot change a verdict.
"""

from __future__ import annotations

import math
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType, TracebackType
from typing import Any

import torch

# Captured originals (see module docstring).
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
_equal = torch.equal
_logical_and = torch.logical_and
_logical_not = torch.logical_not
_where = torch.where
_zeros_like = torch.zeros_like
_manual_seed = torch.manual_seed
_clone = torch.Tensor.clone
_detach = torch.Tensor.detach
_contiguous = torch.Tensor.contiguous
_view = torch.Tensor.view
_to = torch.Tensor.to
_item = torch.Tensor.item
_numel = torch.Tensor.numel
_untyped_storage = torch.Tensor.untyped_storage
_is_floating_point = torch.Tensor.is_floating_point
_is_complex = torch.Tensor.is_complex
_Tensor = torch.Tensor
_thread_enumerate = threading.enumerate
_perf_ns = time.perf_counter_ns
_cuda_synchronize = torch.cuda.synchronize

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


class CallError(Exception):
    """A forward call raised; `side` says whose fault it is."""

    def __init__(self, side: str, exc: BaseException) -> None:
        super().__init__(str(exc))
        self.side = side  # "candidate" | "reference"
        self.original = exc
        self.tb: TracebackType | None = exc.__traceback__


@dataclass
class KernelClock:
    """Accumulates time spent in forward calls and compares (EvalResult.kernel_s)."""

    total_ns: int = 0

    def add(self, ns: int) -> None:
        self.total_ns += ns

    @property
    def seconds(self) -> float:
        return self.total_ns / 1e9


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


# -- inputs -----------------------------------------------------------------------
def secret_seed() -> int:
    return secrets.randbits(63)


def draw_inputs(reference: ModuleType, seed: int, device: torch.device) -> list[Any]:
    """Inputs from `get_inputs()` under `seed`, moved to the device."""
    _manual_seed(seed)
    raw = reference.get_inputs()
    if not isinstance(raw, list | tuple):
        raise TypeError(f"get_inputs() must return a list or tuple, not {type(raw).__name__}")
    return [_to(x, device) if isinstance(x, _Tensor) else x for x in raw]


def clone_inputs(inputs: Sequence[Any]) -> list[Any]:
    return [_clone(x) if isinstance(x, _Tensor) else x for x in inputs]


@dataclass
class Trial:
    """One input set: the pristine copy plus (optionally) the reference's answer."""

    seed: int
    pristine: list[Any]
    reference_out: Any = None
    reference_ran: bool = False

    @classmethod
    def draw(cls, reference: ModuleType, device: torch.device) -> Trial:
        seed = secret_seed()
        return cls(seed=seed, pristine=draw_inputs(reference, seed, device))


# -- calling --------------------------------------------------------------------
def call_model(
    model: Callable[..., Any], inputs: list[Any], side: str, device: torch.device
) -> tuple[Any, Any]:
    """(raw output, snapshot taken the moment forward returned). Errors that surface while
    copying or synchronising (an illegal CUDA access is reported asynchronously) are the
    calling side's fault too."""
    try:
        with torch.no_grad():
            raw = model(*inputs)
            copy = snapshot(raw)
        if device.type == "cuda":
            _cuda_synchronize()
        return raw, copy
    except BaseException as exc:  # noqa: BLE001 - SystemExit in forward is a candidate fault too
        raise CallError(side, exc) from exc


def snapshot(out: Any) -> Any:
    """Clone the outputs right away, before any background work could finish them."""
    if isinstance(out, _Tensor):
        return _clone(_detach(out))
    if isinstance(out, list | tuple):
        copies = [snapshot(o) for o in out]
        return tuple(copies) if isinstance(out, tuple) else copies
    return out


BACKGROUND_GRACE_S = 0.25  # how long a thread left running gets to show it is still writing


@dataclass
class CandidateCall:
    raw: Any
    copy: Any
    new_threads: list[threading.Thread] = field(default_factory=list)
    new_native_threads: int = 0  # OS threads (not Python's) started by the call, still alive


def _native_thread_ids() -> set[int]:
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def call_candidate(
    model: Callable[..., Any], inputs: list[Any], device: torch.device
) -> CandidateCall:
    """Run the candidate, snapshot its output at once, and note threads it left running."""
    before = set(_thread_enumerate())
    native_before = _native_thread_ids()
    raw, copy = call_model(model, inputs, "candidate", device)
    alive = [t for t in _thread_enumerate() if t not in before and t.is_alive()]
    python_ids = {t.native_id for t in alive}
    native_new = _native_thread_ids() - native_before - python_ids
    return CandidateCall(raw, copy, alive, len(native_new))


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


def _bits(t: torch.Tensor) -> torch.Tensor:
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
                and _equal(_bits(now), _bits(before))
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
    generator.manual_seed(secret_seed())
    index = torch.randint(numel, (k,), generator=generator, device=ref.device)
    return _reshape(new, (-1,))[index], _reshape(ref, (-1,))[index]


# -- one trial -------------------------------------------------------------------
def run_trial(
    trial: Trial,
    new_model: Callable[..., Any],
    ref_model: Callable[..., Any] | None,
    device: torch.device,
    atol: float | None,
    rtol: float | None,
    clock: KernelClock,
    flags: set[str] | None = None,
) -> TrialStats:
    """Candidate first, then (unless `trial` already holds it) the reference; then check.
    Advisory findings go into `flags`."""
    start = _perf_ns()
    try:
        new_inputs = clone_inputs(trial.pristine)
        call = call_candidate(new_model, new_inputs, device)
        if call.new_native_threads and flags is not None:
            flags.add("native_thread_started")
        if call.new_threads:
            check_background_work(call, flags)
        if not trial.reference_ran:
            assert ref_model is not None
            trial.reference_out = reference_output(ref_model, trial, device)
        stats = compare_outputs(call.copy, trial.reference_out, atol, rtol)
        check_inputs_unchanged(new_inputs, trial.pristine)
        check_no_alias(as_tensor_list(call.raw, "candidate"), new_inputs)
        return stats
    finally:
        clock.add(_perf_ns() - start)


def check_background_work(call: CandidateCall, flags: set[str] | None) -> None:
    """A thread the candidate left running fails the trial if the output changes after forward
    returned (work finished behind the timer's back); an idle one (a compile or thread pool) is
    only flagged. The output itself is judged from the snapshot taken at return either way."""
    deadline = _perf_ns() + int(BACKGROUND_GRACE_S * 1e9)
    for thread in call.new_threads:
        thread.join(max(0.0, (deadline - _perf_ns()) / 1e9))
    names = ", ".join(t.name for t in call.new_threads[:3])
    if not _same_outputs(call.raw, call.copy):
        raise CheckFailure(
            f"work still running in a background thread after forward returned ({names}): "
            "the output changed after the call",
            "background_thread",
        )
    if flags is not None:
        flags.add("background_thread")


def _same_outputs(raw: Any, copy: Any) -> bool:
    raws = raw if isinstance(raw, list | tuple) else [raw]
    copies = copy if isinstance(copy, list | tuple) else [copy]
    for now, then in zip(raws, copies, strict=False):
        if (
            isinstance(now, _Tensor)
            and isinstance(then, _Tensor)
            and (now.shape != then.shape or not _equal(_bits(now), _bits(then)))
        ):
            return False
    return True


def reference_output(ref_model: Callable[..., Any], trial: Trial, device: torch.device) -> Any:
    """The reference's own output tensor, kept alive (not copied) for as long as the trial
    lives, so the allocator can never hand its memory, answer included, to the candidate."""
    trial.reference_ran = True
    return call_model(ref_model, clone_inputs(trial.pristine), "reference", device)[0]


def reference_answer(
    trial: Trial, ref_model: Callable[..., Any], device: torch.device, clock: KernelClock
) -> None:
    """Compute and keep the reference's answer for `trial` (used before the candidate loads)."""
    start = _perf_ns()
    try:
        trial.reference_out = reference_output(ref_model, trial, device)
    finally:
        clock.add(_perf_ns() - start)


# -- integrity of the namespaces the reference relies on ---------------------------
HARNESS_MODULES = tuple(
    f"engine.bench.{name}"
    for name in (
        "correctness",
        "timing",
        "worker",
        "loader",
        "compile_cache",
        "profiling",
        "sandbox",
        "result",
        "config",
    )
)


def _namespaces(reference: ModuleType) -> dict[str, Any]:
    spaces: dict[str, Any] = {
        "torch": torch,
        "torch.nn.functional": torch.nn.functional,
        "torch.Tensor": torch.Tensor,
        "torch._C.TensorBase": torch._C.TensorBase,
        "torch.nn.Module": torch.nn.Module,
        "reference": reference,
    }
    model = getattr(reference, "Model", None)
    if isinstance(model, type):
        spaces["reference.Model"] = model
    # The harness's own modules and classes: replacing e.g. compare_outputs is the cheapest
    # way to fake a verdict from inside the worker.
    for module_name in HARNESS_MODULES:
        module = sys.modules.get(module_name)
        if module is None:
            continue
        spaces[module_name] = module
        for attr, value in vars(module).items():
            if isinstance(value, type) and value.__module__ == module_name:
                spaces[f"{module_name}.{attr}"] = value
    return spaces


_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep


def _torch_wrapper_of(new: Any, old: Any) -> bool:
    """True if `new` is torch's own wrapper around `old` (torch._dynamo wraps manual_seed and
    nn.Module.__init__ when a candidate uses torch.compile): code in torch's package that
    reaches `old` through `__wrapped__` or its closure."""
    current = new
    for _ in range(5):
        code = getattr(current, "__code__", None)
        if code is None or not code.co_filename.startswith(_TORCH_DIR):
            return False
        cells = [c.cell_contents for c in (current.__closure__ or ()) if _cell_filled(c)]
        if any(c is old for c in cells):
            return True
        current = getattr(current, "__wrapped__", None)
        if current is old:
            return True
    return False


def _cell_filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - empty cells raise
    except ValueError:
        return False
    return True


@dataclass
class NamespaceSnapshot:
    """Everything in torch's and the reference's namespaces, to spot a candidate's patching."""

    objects: dict[str, dict[str, Any]]

    @classmethod
    def take(cls, reference: ModuleType) -> NamespaceSnapshot:
        return cls({k: dict(vars(ns)) for k, ns in _namespaces(reference).items()})

    def changed(self, reference: ModuleType) -> list[str]:
        now = NamespaceSnapshot.take(reference).objects
        out: list[str] = []
        missing = object()
        for space, before in self.objects.items():
            after = now.get(space, {})
            for name, old in before.items():
                new = after.get(name, missing)
                if new is not old and not _torch_wrapper_of(new, old):
                    out.append(f"{space}.{name}")
        return out


_ABSENT = object()


def _attributes(owner: object) -> dict[str, Any]:
    """An object's own attributes (its __dict__, or its slots) plus its class."""
    own = getattr(owner, "__dict__", None)
    if own is not None:
        attrs = dict(own)
    else:
        slots = getattr(type(owner), "__slots__", ())
        attrs = {name: getattr(owner, name, _ABSENT) for name in slots}
    attrs["__class__"] = type(owner)
    return attrs


@dataclass
class InstanceSnapshot:
    """One harness object's attributes, by identity, taken before the candidate loads.

    The namespace snapshot covers modules and classes; a candidate that reaches the worker's
    `Evaluation` or `Timer` through frames or gc can instead shadow a method on the instance
    (`ev.time_both = fake`) or swap its clock, result or kernel clock for its own. None of
    these objects legitimately gains or rebinds an attribute once user code runs, so any
    difference is tampering. Comparing a dozen identities keeps the check cheap enough to run
    on every timing round."""

    owner: object
    label: str
    attrs: dict[str, Any]

    mutable: tuple[str, ...] = ()  # plain state the owner itself updates (a bool, a counter)

    @classmethod
    def take(cls, owner: object, label: str, mutable: tuple[str, ...] = ()) -> InstanceSnapshot:
        return cls(owner, label, _attributes(owner), mutable)

    def changed(self) -> list[str]:
        now = _attributes(self.owner)
        for name in self.mutable:
            now.pop(name, None)
        names = sorted((set(now) | set(self.attrs)) - set(self.mutable))
        return [
            f"{self.label}.{name}"
            for name in names
            if now.get(name, _ABSENT) is not self.attrs.get(name, _ABSENT)
        ]


class HarnessPatched(CheckFailure):
    """A harness object was modified while the candidate ran."""

    def __init__(self, changed: list[str]) -> None:
        shown = ", ".join(changed[:3]) + (
            f" (+{len(changed) - 3} more)" if len(changed) > 3 else ""
        )
        super().__init__(f"candidate patched the benchmark harness ({shown})", "harness_patched")
