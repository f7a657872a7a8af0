"""Timing the reference and the candidate the same way, in the same run.

The clocks are bound when this module is imported (in the fork server, before
any candidate exists) and again by the worker before it loads user code, so
patching `time.perf_counter` buys nothing. Rounds interleave ref/new (in
alternating order) so drift and cache warmth hit both sides alike; thread and
grad settings are reset before every call; gc is off while timing. Every round
changes the inputs outside the timed region (floating-point inputs are rescaled;
inputs with integer or bool tensors are drawn afresh from get_inputs), so a
memoised answer is either recomputed or wrong, and every round's output is
spot-checked against the reference's output of the same round. The Timer's own
attributes are compared by identity every round (a candidate that shadows one of
its methods through frames fails). CPU: host clock around `forward` plus
joining any Python thread it started. CUDA: a 256 MiB L2 flush is queued before
each call and the start event behind it (as `triton.testing.do_bench` does), so the
CPU's dispatch of the first kernel overlaps the flush instead of being timed as
idle GPU; CUDA events around the call, and host time around a device-wide
synchronize less the flush's own span (a third event before the flush); a clear
disagreement means work on a side stream that the events did not see.

Noise is reported, not hidden: the outcome says `noisy` when either side's IQR/median, or
its drift (first-half vs second-half median, in round order), exceeds
`EvalConfig.noisy_threshold`, and carries the CPU load other processes put on the machine
during the timed rounds (`load_monitor`). `paired_speedup` (median of per-round ratios) is
reported beside the ratio of medians: load that hits both calls of a round cancels in it.
"""

from __future__ import annotations

import gc
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from engine.bench.config import EvalConfig
from engine.bench.correctness import CallError, KernelClock
from engine.bench.integrity import InstanceSnapshot, raise_if_patched
from engine.bench.load_monitor import LoadWindow
from engine.bench.result import TimingStats

MIN_WARMUP_CALLS = 3
L2_FLUSH_BYTES = 256 << 20
SIDE_STREAM_RATIO = 1.5
SIDE_STREAM_MIN_GAP_MS = 0.05
RESCALE_SPAN = 0.1  # inputs are multiplied by a fresh factor in [1 - this, 1) every round
RESCALE_MIN_STEP = 0.02  # ... that differs this much from the previous round's
MIN_DRIFT_HALF = 5  # samples per half below which drift can't be told from chance

_TIMER_NAMES = ("perf_counter", "perf_counter_ns", "time", "time_ns", "monotonic", "monotonic_ns")
_ORIGINAL_TIMERS = {name: getattr(time, name) for name in _TIMER_NAMES}
_perf_ns = time.perf_counter_ns
_active_count = threading.active_count
_thread_enumerate = threading.enumerate
_set_num_threads = torch.set_num_threads
_get_num_threads = torch.get_num_threads
_cuda_synchronize = torch.cuda.synchronize
_CudaEvent = torch.cuda.Event
_ORIGINAL_CUDA = {
    "Event.elapsed_time": torch.cuda.Event.elapsed_time,
    "Event.record": torch.cuda.Event.record,
    "synchronize": torch.cuda.synchronize,
}


@dataclass(frozen=True, slots=True)
class Clocks:
    """Clock references the worker takes before importing any user code."""

    perf_ns: Callable[[], int]

    @classmethod
    def capture(cls) -> Clocks:
        return cls(perf_ns=time.perf_counter_ns)


def _clone_all(inputs: list[Any]) -> list[Any]:
    return [x.clone() if isinstance(x, torch.Tensor) else x for x in inputs]


def _next_factor(previous: float) -> float:
    """A fresh factor in [1 - RESCALE_SPAN, 1), at least RESCALE_MIN_STEP from the last one.

    Shrinking by a uniform positive factor keeps every structural property a task may rely
    on (signs, zeros, triangularity, symmetry, ordering, positive definiteness, values in
    [0, 1)), yet moves most outputs far beyond the tolerance from one round to the next."""
    while True:
        factor = 1.0 - RESCALE_SPAN * secrets.randbelow(1 << 20) / (1 << 20)
        if abs(factor - previous) >= RESCALE_MIN_STEP:
            return factor


def _rescalable(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and (x.is_floating_point() or x.is_complex())


def rescaling_changes_inputs(inputs: list[Any]) -> bool:
    """True when rescaling alone makes every round's inputs new: there is a tensor input and
    every tensor input is floating point (an integer index or a bool mask would stay the same,
    so a memoiser keyed on it would go unnoticed)."""
    tensors = [x for x in inputs if isinstance(x, torch.Tensor)]
    return bool(tensors) and all(_rescalable(x) for x in tensors)


def _rescale(inputs: list[Any], ratio: float) -> None:
    """Floating-point inputs *= ratio, in place: one memory pass instead of two (reading a
    pristine copy and writing the working one). The factors are chained, so the inputs stay
    the pristine ones times a factor in [1 - RESCALE_SPAN, 1), up to rounding."""
    with torch.no_grad():
        for target in inputs:
            if _rescalable(target):
                target.mul_(ratio)


def tampered_timers(device: str) -> list[str]:
    """Timer functions that are no longer the originals (candidate monkey-patching)."""
    changed = [
        f"time.{n}" for n, fn in _ORIGINAL_TIMERS.items() if getattr(time, n, None) is not fn
    ]
    if device == "cuda":
        current = {
            "Event.elapsed_time": torch.cuda.Event.elapsed_time,
            "Event.record": torch.cuda.Event.record,
            "synchronize": torch.cuda.synchronize,
        }
        changed += [f"torch.cuda.{n}" for n, fn in _ORIGINAL_CUDA.items() if current[n] is not fn]
    return changed


@dataclass
class SideSamples:
    """Per-call samples (ms) of one side."""

    device_ms: list[float] = field(default_factory=list)  # events on CUDA, host clock on CPU
    # CUDA: host time around a device-wide sync, less the flush (CPU: the same as device_ms)
    host_ms: list[float] = field(default_factory=list)
    spent_ns: int = 0

    def stable(self, target: float, min_n: int) -> bool:
        if len(self.device_ms) < min_n:
            return False
        stats = TimingStats.from_samples(self.device_ms)
        return stats.median > 0 and stats.iqr / stats.median < target


def drift(samples_ms: list[float]) -> float | None:
    """|median of the second half - median of the first half| / overall median, in round
    order: a machine whose speed changed during timing moves the halves apart even when
    each half is tight. None when there are too few samples to tell."""
    half = len(samples_ms) // 2
    if half < MIN_DRIFT_HALF:
        return None
    whole = TimingStats.from_samples(samples_ms).median
    if whole <= 0:
        return None
    first = TimingStats.from_samples(samples_ms[:half]).median
    second = TimingStats.from_samples(samples_ms[-half:]).median
    return abs(second - first) / whole


def relative_iqr(stats: TimingStats) -> float:
    return stats.iqr / stats.median if stats.median > 0 else float("inf")


def paired_speedup(ref_ms: list[float], new_ms: list[float]) -> float | None:
    """Median over rounds of ref_i / new_i. Both calls of a round run back to back, so load
    that slows the machine for a while slows both and cancels in the ratio."""
    ratios = [r / n for r, n in zip(ref_ms, new_ms, strict=False) if n > 0]
    return TimingStats.from_samples(ratios).median if ratios else None


@dataclass
class TimingOutcome:
    ref_ms: TimingStats
    new_ms: TimingStats
    host_ms: TimingStats | None
    speedup: float
    side_stream_suspected: bool
    threads_changed: bool
    inputs_redrawn: bool = False  # fresh get_inputs() every round instead of rescaling
    drift: float | None = None  # the larger of the two sides' `drift()`
    noisy: bool = False  # a side's IQR/median or the drift exceeds config.noisy_threshold
    external_load: float | None = None  # cores other processes used (load_monitor)
    paired_speedup: float | None = None


class Timer:
    """Times forward calls of both sides with identical settings."""

    def __init__(
        self, device: torch.device, threads: int, clocks: Clocks, kernel_clock: KernelClock
    ) -> None:
        self.device = device
        self.threads = threads
        self.perf_ns = clocks.perf_ns
        self.kernel_clock = kernel_clock
        self.threads_changed = False
        self._flush: torch.Tensor | None = None
        self._events: tuple[Any, Any, Any] | None = None
        if device.type == "cuda":
            self._flush = torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.float32, device=device)
            # Created once, outside every timed interval; reuse is safe because each call
            # ends in a device-wide synchronize. (before the flush, start, end)
            self._events = tuple(_CudaEvent(enable_timing=True) for _ in range(3))  # type: ignore[assignment]

    def snapshot(self) -> InstanceSnapshot:
        """This timer's attributes by identity (see InstanceSnapshot); `threads_changed` is the
        one attribute it updates itself."""
        return InstanceSnapshot.take(self, "Timer", mutable=("threads_changed",))

    def _reset_settings(self) -> None:
        if _get_num_threads() != self.threads:
            self.threads_changed = True
        _set_num_threads(self.threads)
        torch.set_grad_enabled(False)

    def call(
        self, model: Callable[..., Any], inputs: list[Any], samples: SideSamples, side: str
    ) -> Any:
        """One timed call; appends its sample(s) and returns the output."""
        try:
            return self._call(model, inputs, samples)
        except BaseException as exc:  # noqa: BLE001 - attribute the fault to its side
            raise CallError(side, exc) from exc

    def _call(self, model: Callable[..., Any], inputs: list[Any], samples: SideSamples) -> Any:
        self._reset_settings()
        if self._flush is not None and self._events is not None:
            before_flush, start_event, end_event = self._events
            _cuda_synchronize()
            t0 = self.perf_ns()
            before_flush.record()
            self._flush.zero_()  # evict L2 so neither side runs on a warm cache
            start_event.record()  # queued behind the flush
            out = model(*inputs)
            end_event.record()
            _cuda_synchronize()
            t1 = self.perf_ns()
            elapsed = _ORIGINAL_CUDA["Event.elapsed_time"]
            device_ms = elapsed(start_event, end_event)
            flush_ms = elapsed(before_flush, end_event) - device_ms
            samples.device_ms.append(device_ms)
            samples.host_ms.append((t1 - t0) / 1e6 - flush_ms)
        else:
            before = _active_count()
            known = set(_thread_enumerate()) if before else set()
            t0 = self.perf_ns()
            out = model(*inputs)
            if _active_count() != before:  # background work counts as the call's time
                for thread in _thread_enumerate():
                    if thread not in known and thread is not threading.current_thread():
                        thread.join()
            t1 = self.perf_ns()
            samples.device_ms.append((t1 - t0) / 1e6)
            samples.host_ms.append((t1 - t0) / 1e6)
        elapsed = t1 - t0
        samples.spent_ns += elapsed
        self.kernel_clock.add(elapsed)
        return out

    def warm_up(
        self, model: Callable[..., Any], inputs: list[Any], budget_s: float, side: str
    ) -> None:
        scratch = SideSamples()
        start = self.perf_ns()
        calls = 0
        while calls < MIN_WARMUP_CALLS or (self.perf_ns() - start) / 1e9 < budget_s:
            self.call(model, inputs, scratch, side)
            calls += 1

    def time_both(
        self,
        ref_model: Callable[..., Any],
        new_model: Callable[..., Any],
        pristine: list[Any],
        config: EvalConfig,
        verify: Callable[[Any, Any, bool], None],
        redraw: Callable[[], list[Any]] | None = None,
    ) -> TimingOutcome:
        """Interleaved rounds of one reference and one candidate call on the same inputs.

        Before each round the inputs change, outside the timed region: floating-point inputs
        are rescaled by a fresh factor (see `_next_factor`); when some tensor input is not
        floating point (or there is none), `redraw()` supplies new inputs from a fresh secret
        seed instead. So answers memoised or left in memory by earlier rounds are wrong, and
        every round's output is checked against the reference's output of that same round:
        on secret random elements, and in full on the last round (`verify(new, ref, full)`
        raises on a mismatch). Both sides read the same input tensors and the order alternates
        (ref first, then candidate first) so neither side systematically finds the inputs
        warmer in cache. In ref-first rounds the reference's output stays alive until the
        candidate has returned, so the allocator cannot hand it over.
        """
        guard = self.snapshot()  # before any candidate call in this method
        inputs = _clone_all(pristine)
        fresh_each_round = (
            redraw is not None and bool(inputs) and not rescaling_changes_inputs(inputs)
        )
        grad_was = torch.is_grad_enabled()
        gc.collect()
        gc.disable()
        try:
            self.warm_up(ref_model, inputs, config.warmup_s, "reference")
            self.warm_up(new_model, inputs, config.warmup_s, "candidate")
            raise_if_patched(guard)
            load = LoadWindow.begin()
            ref, new = SideSamples(), SideSamples()
            budget_ns = config.timing_budget_s * 1e9
            rounds = 0
            factor = 1.0
            while True:
                rounds += 1
                if fresh_each_round:
                    assert redraw is not None
                    inputs = redraw()
                else:
                    previous, factor = factor, _next_factor(factor)
                    _rescale(inputs, factor / previous)
                if rounds % 2:
                    ref_out = self.call(ref_model, inputs, ref, "reference")
                    new_out = self.call(new_model, inputs, new, "candidate")
                else:
                    new_out = self.call(new_model, inputs, new, "candidate")
                    ref_out = self.call(ref_model, inputs, ref, "reference")
                raise_if_patched(guard)
                done = self._done(rounds, ref, new, config, budget_ns)
                start = self.perf_ns()
                verify(new_out, ref_out, done)  # spot check every round, in full at the end
                self.kernel_clock.add(self.perf_ns() - start)
                del ref_out, new_out
                if done:
                    break
            external_load = load.finish()
        finally:
            gc.enable()
            torch.set_grad_enabled(grad_was)
        outcome = self._outcome(ref, new, fresh_each_round, config.noisy_threshold)
        outcome.external_load = external_load
        return outcome

    @staticmethod
    def _done(
        rounds: int, ref: SideSamples, new: SideSamples, config: EvalConfig, budget_ns: float
    ) -> bool:
        if config.timing_trials is not None:
            return rounds >= config.timing_trials
        if rounds >= config.max_timing_trials:
            return True
        if rounds < config.min_timing_trials:
            return False
        if ref.spent_ns > budget_ns or new.spent_ns > budget_ns:
            return True
        return ref.stable(config.noise_target, config.min_timing_trials) and new.stable(
            config.noise_target, config.min_timing_trials
        )

    def _outcome(
        self, ref: SideSamples, new: SideSamples, redrawn: bool, noisy_threshold: float
    ) -> TimingOutcome:
        ref_samples, new_samples = ref.device_ms, new.device_ms
        ref_stats = TimingStats.from_samples(ref_samples)
        new_stats = TimingStats.from_samples(new_samples)
        host: TimingStats | None = None
        suspected = False
        if self.device.type == "cuda":
            host = TimingStats.from_samples(new.host_ms)
            gap = host.median - new_stats.median
            if host.median > SIDE_STREAM_RATIO * new_stats.median and gap > SIDE_STREAM_MIN_GAP_MS:
                # Events on the current stream missed work the device-wide sync waited for.
                suspected = True
                ref_samples, new_samples = ref.host_ms, new.host_ms
                ref_stats = TimingStats.from_samples(ref_samples)
                new_stats = host
        speedup = ref_stats.median / new_stats.median if new_stats.median > 0 else float("inf")
        drifts = [d for d in (drift(ref_samples), drift(new_samples)) if d is not None]
        worst_drift = max(drifts) if drifts else None
        noisy = max(relative_iqr(ref_stats), relative_iqr(new_stats)) > noisy_threshold or (
            worst_drift is not None and worst_drift > noisy_threshold
        )
        return TimingOutcome(
            ref_ms=ref_stats,
            new_ms=new_stats,
            host_ms=host,
            speedup=speedup,
            side_stream_suspected=suspected,
            threads_changed=self.threads_changed,
            inputs_redrawn=redrawn,
            drift=worst_drift,
            noisy=noisy,
            paired_speedup=paired_speedup(ref_samples, new_samples),
        )
