"""Correctness trials: is the candidate's output the reference's, honestly computed?

Every trial draws inputs from a fresh secret seed, gives each side its own
clone, runs the CANDIDATE FIRST (so the allocator cannot hand it the
reference's freshly freed answer), snapshots the output the instant `forward`
returns, and fails if a Python thread the candidate left running changes it
afterwards. The output itself is judged by output_checks.py.

The torch functions used here are bound when this module is imported (in the
fork server, long before any candidate code runs), so a candidate that replaces
`torch.manual_seed` or `Tensor.clone` cannot change a verdict.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType, TracebackType
from typing import Any

import torch

from engine.bench.output_checks import (
    CheckFailure,
    TrialStats,
    as_tensor_list,
    bit_view,
    check_inputs_unchanged,
    check_no_alias,
    compare_outputs,
)

_equal = torch.equal
_manual_seed = torch.manual_seed
_clone = torch.Tensor.clone
_detach = torch.Tensor.detach
_Tensor = torch.Tensor
_to = torch.Tensor.to
_thread_enumerate = threading.enumerate
_perf_ns = time.perf_counter_ns
_cuda_synchronize = torch.cuda.synchronize


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
            and (now.shape != then.shape or not _equal(bit_view(now), bit_view(then)))
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
