"""The sandboxed side of one evaluation: `run(eval_dir)` in a freshly forked process.

Order matters and is part of the defence:
1. clocks are captured before any user code exists;
2. request.json is read and deleted (the candidate never sees the nonce or config); the
   signer stays an argument, never an attribute of the `Evaluation` a candidate can find;
3. device, resource limits and thread settings are fixed;
4. the reference is imported, its model built, and one trial's answer computed
   while torch is still pristine (a later comparison exposes tampering);
5. the compile cache is installed and the candidate imported and built;
6. correctness trials, interleaved timing, one fresh-input trial, tamper checks,
   optional profiling;
7. the result's timings are compared with the copy frozen when timing returned, then
   result.json is written atomically, signed with the nonce; prints go to log.txt.

structure: long because `Evaluation` is that one sequential procedure, and its order is
the defence: split across modules, a step could be called out of turn without the reader
seeing it. What is not the procedure lives beside it: process_tree.py, worker_setup.py,
compile_activity.py, integrity.py, output_checks.py, correctness.py, timing.py.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from engine.atomic_io import SCRATCH_FILE, atomic_write_text
from engine.bench import backend_settings, correctness, deadlines, lease, loader, profiling, timing
from engine.bench.compile_activity import CompileActivity
from engine.bench.compile_cache import CompileCache, ExtensionBuildError
from engine.bench.config import EvalConfig
from engine.bench.correctness import CallError, KernelClock, Trial
from engine.bench.integrity import (
    HarnessPatched,
    InstanceSnapshot,
    NamespaceSnapshot,
    integrity_failure,
    raise_if_patched,
)
from engine.bench.load_monitor import EXTERNAL_LOAD_CORES
from engine.bench.output_checks import CheckFailure, TrialStats, compare_outputs
from engine.bench.process_tree import kill_descendants
from engine.bench.result import EvalResult
from engine.bench.sandbox import STACK_DUMP_SIGNAL
from engine.bench.signed_files import CHECKPOINT_FILE, format_phase_line, result_mac
from engine.bench.worker_setup import apply_limits, resolve_device, steady_allocator

SPOT_CHECK_ELEMENTS = 4096  # per output, per timing round
# The reference's first call includes one-time warm-up (allocator, thread pool, lazy init), so
# a second call gives its steady time; only a first call slower than this is taken as is.
SINGLE_CALL_ABOVE_S = 2.0


class Stop(Exception):
    """Ends the evaluation early; the verdict is already in the result."""


# Bound at import (in the fork server), so a candidate that patches os.write or json.dumps
# cannot rewrite the verdict on its way to disk.
_os_write = os.write
_json_dumps = json.dumps


def note(text: str) -> None:
    """A harness line for log.txt, straight to fd 2 (the candidate may have replaced print)."""
    with contextlib.suppress(OSError):
        _os_write(2, f"[stark] {text}\n".encode())


@dataclass
class Evaluation:
    """State of one evaluation inside the worker."""

    eval_dir: Path
    clocks: timing.Clocks
    # Paths from request.json. The request itself and the signing closure are never
    # attributes: a candidate that finds this object through gc must not find `sign` or the
    # nonce one attribute away (the worker passes `sign` down as an argument instead).
    reference_path: str = ""
    cache_dir: str = ""
    result: EvalResult = field(default_factory=EvalResult)
    kernel_clock: KernelClock = field(default_factory=KernelClock)
    config: EvalConfig = field(default_factory=EvalConfig)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    threads: int = 1
    candidate_path: str = ""
    compile_start_ns: int | None = None
    reference_call_s: float | None = None  # measured before the candidate was loaded
    plan: deadlines.RunPlan | None = None
    reference: ModuleType | None = None
    pristine: NamespaceSnapshot | None = None
    backend: backend_settings.BackendSettings = ()  # torch's switches before the candidate
    compile_cache: CompileCache | None = None
    # This object, its clocks and kernel clock by identity, filled in (never rebound) just
    # before the candidate loads: shadowing `time_both` on the instance is tampering too.
    guards: list[InstanceSnapshot] = field(default_factory=list)
    # Idents of the Python threads alive before the candidate was imported (the harness's
    # own); set once, before the guards are taken, so rebinding it is caught as tampering.
    threads_before_candidate: frozenset[int] = frozenset()

    def fail_check(self, exc: CheckFailure, prefix: str = "") -> Stop:
        """A failed correctness check; report the failing trial's errors as well."""
        if exc.stats is not None:
            self.result.max_abs_err = max(self.result.max_abs_err or 0.0, exc.stats.max_abs_err)
            self.result.mean_abs_err = max(self.result.mean_abs_err or 0.0, exc.stats.mean_abs_err)
        return self.fail("correctness", f"{prefix}{exc}", exc.flag)

    def fail(self, stage: str, error: str, flag: str | None = None) -> Stop:
        self.result.stage = stage
        self.result.error = error
        self.result.correct = False
        if flag:
            self.result.add_flag(flag)
        return Stop(error)

    def phase(self, name: str, sign: Signer, **more: str) -> None:
        """Announce a phase to the sandbox, signed; after the reference phase every line also
        carries the reference's measured call time, which sizes the run deadline. `more`:
        further key=value words, signed as well (the lease phase names the device)."""
        extras: dict[str, str] = {}
        if self.reference_call_s is not None:
            extras["call_s"] = f"{self.reference_call_s:.6f}"
        extras.update(more)
        token = sign({"phase": name, **extras})
        line = format_phase_line(name, token, extras)
        atomic_write_text(self.eval_dir / "phase", line, **SCRATCH_FILE)

    def checkpoint(self, name: str, sign: Signer, seal: Seal = ()) -> None:
        """A signed copy of the verdict so far: if a later deadline kills the worker, the
        parent still reports what was measured (trials passed, timings)."""
        self.result.kernel_s = self.kernel_clock.seconds
        fail_if_timings_changed(self.result, seal)
        verdict = self.result.to_dict()
        mac = sign({"checkpoint": name, "result": verdict})
        body = {"checkpoint": name, "result": verdict, "mac": mac}
        with contextlib.suppress(OSError, TypeError, ValueError):
            atomic_write_text(self.eval_dir / CHECKPOINT_FILE, _json_dumps(body), **SCRATCH_FILE)

    def measure_reference(self, ref_model: Any, canary: Trial) -> None:
        """The reference's first call computes the canary's answer; a second call (output
        discarded) gives its steady time, without the first call's one-time warm-up, unless
        the first alone took over SINGLE_CALL_ABOVE_S. Both before the candidate exists, so
        the figure that sizes the deadlines is the reference's alone."""
        start = self.clocks.perf_ns()
        self.reference_side(
            lambda: correctness.reference_answer(canary, ref_model, self.device, self.kernel_clock)
        )
        first_s = (self.clocks.perf_ns() - start) / 1e9
        call_s = first_s
        if first_s <= SINGLE_CALL_ABOVE_S:
            start = self.clocks.perf_ns()
            inputs = correctness.clone_inputs(canary.pristine)
            self.reference_side(
                lambda: correctness.call_model(ref_model, inputs, "reference", self.device)
            )
            call_s = (self.clocks.perf_ns() - start) / 1e9
            self.kernel_clock.add(int(call_s * 1e9))
        self.reference_call_s = call_s
        self.plan = deadlines.plan_run(
            self.config, deadlines.reference_estimate(self.config, call_s)
        )
        message = deadlines.deadline_note(self.plan)
        if message:
            note(message)
        if self.plan.rounds_reduced:
            self.config.min_timing_trials = self.plan.min_timing_rounds
            self.result.add_flag("timing_rounds_reduced")
        if self.plan.raised:
            self.result.add_flag("run_deadline_raised")

    # -- the whole evaluation ----------------------------------------------------
    def run(self, sign: Signer, seal: list[tuple[object, ...]]) -> None:
        """The procedure. `sign` (HMAC under the nonce) is an argument, never an attribute;
        `seal` receives the timing figures as the timer returned them (see timing_seal_of),
        held by the caller, not by this object."""
        self.phase("reference", sign)
        self.device = resolve_device(self.config.device)
        self.result.device = self.device.type
        apply_limits(self.device, self.config)
        if self.device.type == "cpu" and not steady_allocator():
            self.result.add_flag("allocator_not_pinned")
        self.threads = self.config.num_threads or torch.get_num_threads()
        torch.set_num_threads(self.threads)  # pinned: both sides run (and are timed) with it
        self.result.threads = self.threads

        reference = self.import_reference()
        weight_seed = correctness.secret_seed()
        ref_model = self.build(reference.Model, reference, weight_seed, "reference", "Model")
        canary = self.draw(reference)
        with CompileActivity(self.eval_dir, activity_signer(sign)):
            self.measure_reference(ref_model, canary)
        self.reference = reference
        self.pristine = NamespaceSnapshot.take(reference)
        self.backend = backend_settings.current()

        self.compile_start_ns = self.clocks.perf_ns()
        self.compile_cache = CompileCache(
            Path(self.cache_dir), self.device.type, self.eval_dir / "log.txt"
        )
        self.threads_before_candidate = frozenset(t.ident or 0 for t in _thread_enumerate())
        self.guards.extend(
            [
                InstanceSnapshot.take(self, "Evaluation"),
                InstanceSnapshot.take(self.clocks, "Clocks"),
                InstanceSnapshot.take(self.kernel_clock, "KernelClock", mutable=("total_ns",)),
            ]
        )
        os.environ["TORCHINDUCTOR_COMPILE_THREADS"] = "1"  # no compile-worker processes
        self.phase("compile", sign)
        candidate = self.import_candidate(self.compile_cache)
        new_model = self.build(candidate.ModelNew, reference, weight_seed, "import", "ModelNew")
        self.result.compiled = True
        self.phase("warmup", sign)
        with CompileActivity(self.eval_dir, activity_signer(sign)):
            first_call_error = self.first_call(new_model, canary)
        self.result.compile_s = (self.clocks.perf_ns() - self.compile_start_ns) / 1e9
        self.phase("run", sign)
        if first_call_error is not None:
            raise self.call_error(first_call_error)
        self.check_integrity()

        last_trial = self.correctness_trials(reference, ref_model, new_model, sign)
        self.check_children()
        self.await_lease(sign)
        self.phase("timing", sign)
        seal.append(self.time_both(reference, ref_model, new_model, last_trial))
        self.check_children()
        self.checkpoint("timing", sign, seal)
        self.phase("checks", sign)
        self.fresh_input_trial(canary, ref_model, new_model)
        self.check_integrity()
        self.result.correct = True
        if self.config.profile:
            tampered = timing.tampered_timers(self.device.type)
            if tampered:
                self.result.add_flag("timer_tampering")
            self.checkpoint("checked", sign, seal)  # the verdict, whatever the profiler does
            self.phase("profile", sign)
            self.profile(new_model, last_trial)

    def await_lease(self, sign: Signer) -> None:
        """One timing at a time per device (lease.py): ask the sandbox for the device's
        lease (the signed `lease` phase, naming the device) and wait for its signed grant.
        The wait counts against no deadline but the lease's own, nor in any timing."""
        self.phase(deadlines.LEASE_PHASE, sign, device=self.device.type)
        lease.await_grant(self.eval_dir, sign({"lease": "granted"}))

    def first_call(self, new_model: Any, canary: Trial) -> CallError | None:
        """One unchecked call before the run phase: JIT work done on first use (torch.compile,
        Triton, lazily built extensions) is compilation, so it runs under the compile deadline,
        and the thread pools it starts exist before the checked trials begin."""
        try:
            inputs = correctness.clone_inputs(canary.pristine)
            correctness.call_model(new_model, inputs, "candidate", self.device)
        except CallError as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - e.g. a sticky CUDA error left by the candidate
            return CallError("candidate", exc)
        return None

    def draw(self, reference: ModuleType) -> Trial:
        """Fresh inputs from the task's get_inputs() under a new secret seed. The time counts
        as the task's (kernel_s), like its forward calls: it is the task's own code and grows
        with its input sizes, while harness_overhead_s is meant to show what the harness adds."""
        start = self.clocks.perf_ns()
        try:
            return self.reference_side(lambda: Trial.draw(reference, self.device))
        finally:
            self.kernel_clock.add(self.clocks.perf_ns() - start)

    def reference_side(self, action: Any) -> Any:
        try:
            return action()
        except CallError as exc:
            raise self.fail("reference", self.reference_error(exc.original)) from exc
        except Exception as exc:
            raise self.fail("reference", self.reference_error(exc)) from exc

    @staticmethod
    def reference_error(exc: BaseException) -> str:
        return f"the reference task failed (not the candidate's fault): {loader.one_line(exc)}"

    # -- loading -------------------------------------------------------------------
    def import_reference(self) -> ModuleType:
        try:
            module = loader.import_from_path(self.reference_path, "stark_reference")
        except BaseException as exc:  # noqa: BLE001 - SystemExit in a reference too
            raise self.fail("reference", self.reference_error(exc)) from exc
        missing = loader.missing_names(module, loader.REQUIRED_REFERENCE_NAMES)
        if missing:
            raise self.fail(
                "reference",
                f"the reference task is missing {', '.join(missing)} (not the candidate's fault)",
            )
        return module

    def import_candidate(self, cache: CompileCache) -> ModuleType:
        cache.install()
        try:
            module = loader.import_from_path(self.candidate_path, "stark_candidate")
        except BaseException as exc:  # noqa: BLE001 - sys.exit at import is a verdict
            self.raise_if_build_failed(exc, failures_before=0)
            failure = loader.describe_import_failure(exc, self.candidate_path)
            self.result.error_location = failure.location
            traceback.print_exception(exc)
            raise self.fail(failure.stage, failure.error) from exc
        if cache.failures:
            self.result.add_flag("extension_build_failed")  # swallowed by the candidate
        if not hasattr(module, "ModelNew"):
            raise self.fail("import", "candidate defines no ModelNew")
        return module

    def raise_if_build_failed(self, exc: BaseException, failures_before: int) -> None:
        """An extension build that failed (at import or in ModelNew.__init__) is a compile
        verdict with the compiler's own text in `log`, not an import error."""
        cache = self.compile_cache
        build_error = next((e for e in _causes(exc) if isinstance(e, ExtensionBuildError)), None)
        new_failures = cache.failures[failures_before:] if cache is not None else []
        if build_error is None and not new_failures:
            return
        record = new_failures[-1] if new_failures else None
        self.result.log = record.log_excerpt if record else ""
        self.result.error_location = loader.location_in(exc.__traceback__, self.candidate_path)
        raise self.fail("compile", str(build_error or record.error)) from exc  # type: ignore[union-attr]

    def build(
        self, cls: Any, reference: ModuleType, seed: int, stage: str, what: str
    ) -> torch.nn.Module:
        """Construct with the shared secret seed so both sides get identical weights."""
        failures_before = len(self.compile_cache.failures) if self.compile_cache else 0
        try:
            correctness._manual_seed(seed)
            model = cls(*reference.get_init_inputs())
            if isinstance(model, torch.nn.Module):
                model = model.to(self.device)
            if self.device.type == "cuda":
                # CUDA errors are asynchronous: a fault launched by this side's import or
                # __init__ must surface here, as this side's verdict, not in the harness later.
                correctness._cuda_synchronize()
        except BaseException as exc:  # noqa: BLE001
            if stage == "import":
                self.raise_if_build_failed(exc, failures_before)
                self.result.error_location = loader.location_in(
                    exc.__traceback__, self.candidate_path
                )
                traceback.print_exception(exc)
                raise self.fail(
                    stage, f"{what}(*get_init_inputs()) failed: {loader.one_line(exc)}"
                ) from exc
            raise self.fail(stage, self.reference_error(exc)) from exc
        return model

    # -- running -------------------------------------------------------------------
    def call_error(self, exc: CallError) -> Stop:
        if exc.side == "reference":
            return self.fail("reference", self.reference_error(exc.original))
        self.result.error_location = loader.location_in(exc.tb, self.candidate_path)
        traceback.print_exception(exc.original)
        original = exc.original
        if isinstance(original, SystemExit):
            return self.fail("runtime", f"candidate called sys.exit({original.code!r}) in forward")
        return self.fail("runtime", f"forward raised {loader.one_line(original)}")

    def correctness_trials(
        self, reference: ModuleType, ref_model: Any, new_model: Any, sign: Signer
    ) -> Trial:
        trials = self.config.correctness_trials
        self.result.correctness_trials = trials
        stats = TrialStats()
        trial: Trial | None = None
        for index in range(trials):
            trial = self.draw(reference)
            # A thread pool may legitimately appear on the first call; an OS thread that is
            # started by a later call and outlives it is worth a flag (not a verdict).
            flags: set[str] | None = set() if index > 0 else None
            try:
                outcome = correctness.run_trial(
                    trial,
                    new_model,
                    ref_model,
                    self.device,
                    self.config.atol,
                    self.config.rtol,
                    self.kernel_clock,
                    flags,
                )
            except CallError as exc:
                raise self.call_error(exc) from exc
            except CheckFailure as exc:
                raise self.fail_check(exc) from exc
            finally:
                self.check_threads()
                for flag in sorted(flags or ()):
                    self.result.add_flag(flag)
            stats.merge(outcome)
            self.result.max_abs_err, self.result.mean_abs_err = (
                stats.max_abs_err,
                stats.mean_abs_err,
            )
            self.result.trials_passed += 1
            self.checkpoint("correctness", sign)
        assert trial is not None
        return trial

    def check_threads(self) -> None:
        if torch.get_num_threads() != self.threads:
            self.result.add_flag("thread_settings_changed")
            torch.set_num_threads(self.threads)

    def time_both(
        self, reference: ModuleType, ref_model: Any, new_model: Any, trial: Trial
    ) -> tuple[object, ...]:
        """Time both sides into the result; returns the figures frozen the moment the timer
        returned (timing_seal_of), for the caller to compare before signing."""
        timer = timing.Timer(self.device, self.threads, self.clocks, self.kernel_clock)
        timer_guard = timer.snapshot()
        atol, rtol = self.config.atol, self.config.rtol

        def verify(new_out: Any, ref_out: Any, full: bool) -> None:
            spot = 0 if full else SPOT_CHECK_ELEMENTS
            compare_outputs(new_out, ref_out, atol, rtol, spot_check=spot)

        def redraw() -> list[Any]:
            """Fresh inputs from a new secret seed, for inputs rescaling cannot change."""
            return self.draw(reference).pristine

        if not any(isinstance(x, torch.Tensor) for x in trial.pristine):
            # The output can't depend on (tensor) inputs, so caching it is indistinguishable
            # from computing it; the reference's answer is a constant too.
            self.result.add_flag("memoisation_undetectable")
        try:
            outcome = timer.time_both(
                ref_model, new_model, trial.pristine, self.config, verify, redraw
            )
            raise_if_patched(timer_guard)
        except CallError as exc:
            raise self.call_error(exc) from exc
        except HarnessPatched as exc:
            raise self.fail("correctness", str(exc), exc.flag) from exc
        except CheckFailure as exc:
            raise self.fail_check(
                exc, "wrong output during timing (passed the trials before): "
            ) from exc
        # Frozen at once, before the figures reach the result a candidate thread may write to.
        lingering = self.lingering_threads()
        sealed = timing_seal_of(outcome, untrusted=bool(lingering))
        if lingering:
            note(f"candidate thread(s) still alive after timing: {lingering}; speedup withheld")
            self.result.add_flag("background_thread")
            self.result.add_flag("untrusted_timing")
        if outcome.threads_changed:
            self.result.add_flag("thread_settings_changed")
        if outcome.side_stream_suspected:
            self.result.add_flag("side_stream_suspected")
        self.result.ref_ms, self.result.new_ms = outcome.ref_ms, outcome.new_ms
        self.result.host_ms = outcome.host_ms
        self.result.speedup = outcome.speedup
        self.result.drift, self.result.external_load = outcome.drift, outcome.external_load
        self.result.paired_speedup = outcome.paired_speedup
        if outcome.noisy:
            self.result.add_flag("noisy")
        if outcome.drift is not None and outcome.drift > self.config.noisy_threshold:
            self.result.add_flag("timing_drift")
        if outcome.external_load is not None and outcome.external_load > EXTERNAL_LOAD_CORES:
            self.result.add_flag("external_load")
        return sealed

    def lingering_threads(self) -> str:
        """Names of Python threads not alive before the candidate was imported (started at its
        import, in __init__ or in forward) that are still alive when timing ends: such a
        thread could have changed anything timing measured, so the speedup is withheld (the
        parent drops it on `untrusted_timing`). Empty when there are none."""
        harness = self.threads_before_candidate
        alive = [t for t in _thread_enumerate() if t.is_alive() and (t.ident or 0) not in harness]
        names = ", ".join(t.name for t in alive[:3])
        return names + (f" (+{len(alive) - 3} more)" if len(alive) > 3 else "")

    def fresh_input_trial(self, canary: Trial, ref_model: Any, new_model: Any) -> None:
        """One more trial, inputs drawn before the candidate existed, answer computed then."""
        atol, rtol = self.config.atol, self.config.rtol
        try:
            correctness.run_trial(
                canary, new_model, None, self.device, atol, rtol, self.kernel_clock
            )
        except CallError as exc:
            raise self.call_error(exc) from exc
        except CheckFailure as exc:
            raise self.fail_check(exc, "failed a fresh-input trial after timing: ") from exc
        # The reference must still give the answer it gave before the candidate was loaded.
        again = Trial(seed=canary.seed, pristine=canary.pristine)
        self.reference_side(
            lambda: correctness.reference_answer(again, ref_model, self.device, self.kernel_clock)
        )
        start = self.clocks.perf_ns()
        try:
            compare_outputs(again.reference_out, canary.reference_out, atol, rtol)
        except CheckFailure as exc:
            raise self.fail(
                "correctness",
                "the reference's output changed after the candidate was loaded "
                f"(torch or the reference was tampered with): {exc}",
                "reference_tampered",
            ) from exc
        finally:
            self.kernel_clock.add(self.clocks.perf_ns() - start)  # a compare, like the trials'

    def check_integrity(self) -> None:
        self.check_threads()
        failure = integrity_failure(self.pristine, self.reference, self.guards)
        if failure:
            raise self.fail("correctness", *failure)
        self.check_backend_settings()
        self.check_children()

    def check_backend_settings(self) -> None:
        changed = backend_settings.changes(self.backend, backend_settings.current())
        if changed:
            shown = "; ".join(changed[:3]) + (
                f" (+{len(changed) - 3} more)" if len(changed) > 3 else ""
            )
            raise self.fail(
                "correctness",
                f"candidate changed torch's backend settings ({shown}); the reference would "
                "run different kernels",
                "backend_settings_changed",
            )

    def check_children(self) -> None:
        """Processes the candidate started and left running compete with both sides for the
        CPU, and can pause exactly while the candidate runs, slowing only the reference."""
        left = kill_descendants()
        if left:
            raise self.fail(
                "runtime",
                f"candidate left {left} child process(es) running; timing would be unreliable",
                "child_processes",
            )

    def profile(self, new_model: Any, trial: Trial) -> None:
        try:
            inputs = correctness.clone_inputs(trial.pristine)
            self.result.profile = profiling.profile_candidate(
                new_model, inputs, self.device, self.config.profile_top_k
            )
        except Exception as exc:  # noqa: BLE001 - a profile is advisory; keep the verdict
            note(f"profiling failed: {loader.one_line(exc)}")


Signer = Callable[[dict[str, object]], str]
Seal = list[tuple[object, ...]] | tuple[()]
_thread_enumerate = threading.enumerate  # bound before any candidate exists


def activity_signer(sign: Signer) -> Callable[[int], str]:
    """Signs compile-activity heartbeats only, so the heartbeat thread's object holds no
    general signer (one that would sign a verdict)."""
    return lambda count: sign({"activity": count})


def timing_seal_of(outcome: timing.TimingOutcome, untrusted: bool = False) -> tuple[object, ...]:
    """The figures the parent's speedup is computed from (and whether it is withheld), as
    immutable values: a tuple of floats and bools that no thread can change in place."""
    return tuple(
        None if stats is None else tuple(float(v) for v in _stats_values(stats))
        for stats in (outcome.ref_ms, outcome.new_ms, outcome.host_ms)
    ) + (outcome.side_stream_suspected, outcome.paired_speedup, untrusted)


def _stats_values(stats: Any) -> tuple[float, ...]:
    return (stats.median, stats.iqr, stats.mean, stats.min, stats.n)


def result_timing_seal(result: EvalResult) -> tuple[object, ...]:
    return tuple(
        None if stats is None else tuple(float(v) for v in _stats_values(stats))
        for stats in (result.ref_ms, result.new_ms, result.host_ms)
    ) + (
        "side_stream_suspected" in result.flags,
        result.paired_speedup,
        "untrusted_timing" in result.flags,
    )


def timings_changed(result: EvalResult, seal: Seal) -> bool:
    """Do the result's timing figures differ from what the timer returned? (No seal: timing
    never finished, so there is nothing to compare.)"""
    if not seal:
        return False
    try:
        return result_timing_seal(result) != seal[0]
    except (TypeError, ValueError, AttributeError):
        return True


def fail_if_timings_changed(result: EvalResult, seal: Seal) -> None:
    if result.error is None and timings_changed(result, seal):
        result.correct = False
        result.stage = "correctness"
        result.error = (
            "candidate changed the measured timings after timing ended (the result no longer "
            "matches what the timer returned)"
        )
        result.add_flag("harness_patched")


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 20:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def run(
    eval_dir: str,
    _integrity: Any = integrity_failure,
    _timings_check: Any = fail_if_timings_changed,  # bound before user code exists
) -> None:
    """Evaluate the request in `eval_dir` and write `result.json` there."""
    clocks = timing.Clocks.capture()  # before anything from the user is imported
    faulthandler.enable(file=sys.stderr, all_threads=True)  # a segfault's stack goes to log.txt
    directory = Path(eval_dir)
    request_path = directory / "request.json"
    request = json.loads(request_path.read_text())
    request_path.unlink()
    nonce = str(request.pop("nonce"))
    result_path = Path(str(request["result_path"]))

    # On SIGUSR1 (the sandbox, just before a deadline kill), every thread's stack goes to
    # log.txt, so a hang's verdict can say where it hung (see evaluate.py).
    with contextlib.suppress(RuntimeError, ValueError):
        faulthandler.register(STACK_DUMP_SIGNAL, file=sys.stderr, all_threads=True)
    evaluation = Evaluation(
        directory,
        clocks,
        reference_path=str(request["reference_path"]),
        cache_dir=str(request["cache_dir"]),
        candidate_path=str(request["candidate_path"]),
        config=EvalConfig.from_dict(request.get("config") or {}),
    )
    del request  # only the paths above are kept; the nonce lives in this frame alone
    result = evaluation.result
    guards = evaluation.guards  # this list, even if the candidate rebinds the attribute
    seal: list[tuple[object, ...]] = []  # held here, not by the Evaluation
    try:
        evaluation.run(lambda body: result_mac(nonce, body), seal)
    except Stop:
        pass
    except BaseException as exc:  # noqa: BLE001 - a verdict must always be written
        traceback.print_exception(exc)
        if result.error is None:
            result.stage = "harness"
            result.error = f"harness error in the worker: {loader.one_line(exc)}"
        result.correct = False
    # Once more, after everything and outside any method the candidate could have replaced.
    failure = _integrity(evaluation.pristine, evaluation.reference, guards)
    if failure and result.error is None:
        result.stage, result.error = "correctness", failure[0]
        result.add_flag(failure[1])
    tampered = timing.tampered_timers(evaluation.device.type)
    if tampered:
        result.add_flag("timer_tampering")
        note(f"candidate replaced timers: {', '.join(tampered)}")
    _timings_check(result, seal)  # just before signing: the figures are the timer's
    if result.error is not None:
        result.correct = False
    result.kernel_s = evaluation.kernel_clock.seconds
    if result.compile_s is None:
        started = evaluation.compile_start_ns
        result.compile_s = (clocks.perf_ns() - started) / 1e9 if started is not None else 0.0
    verdict = result.to_dict()
    signed = {"result": verdict, "mac": result_mac(nonce, verdict)}
    atomic_write_text(result_path, _json_dumps(signed), **SCRATCH_FILE)
