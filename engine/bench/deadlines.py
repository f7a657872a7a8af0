"""Deadlines that fit the problem: the phases of one evaluation, how long each may take, and
the one-line errors that name the phase and the flag that would help.

Pure Python (no torch): the sandbox (parent) and the worker both use it, so the worker sizes
its timing rounds exactly as the parent sizes the run deadline.

The run deadline is sized from the reference's time per forward call. That figure is
measured by the worker *before the candidate is loaded* and reported in the signed
"compile" phase line; the parent never believes more than the span it saw the reference
phase take itself, so a candidate cannot lengthen its own deadline (see sandbox.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.bench.config import EvalConfig

# Phase words in the order the worker writes them. "run" is the correctness trials (the
# name predates the finer phases and is kept for the phase-file protocol).
PHASE_ORDER = (
    "start",
    "reference",
    "compile",
    "warmup",
    "run",
    "lease",
    "timing",
    "checks",
    "profile",
)
# Waiting for the device lease (lease.py) before timing: under its own deadline
# (`EvalConfig.lease_timeout_s`), and its span is added back to the run deadline.
LEASE_PHASE = "lease"
RUN_PHASES = ("run", "timing", "checks")  # one run deadline covers these three
# Phases with the activity rule: run deadline since compile work was last seen, capped by
# the compile deadline (JIT compilation on first use is compilation; an endless loop is not).
ACTIVITY_PHASES = ("reference", "warmup")
PHASE_TITLES = {
    "start": "start-up",
    "reference": "the reference (import and first calls, before the candidate was loaded)",
    "compile": "compile/import",
    "warmup": "first call (JIT compile / warm-up)",
    "run": "correctness",
    "lease": "waiting for the device lease",
    "timing": "timing",
    "checks": "final checks",
    "profile": "profiling",
}

SAFETY_FACTOR = 2.0  # the candidate may be as slow as the reference, and the machine busy
FIXED_SLACK_S = 5.0  # drawing inputs, comparisons, writing results
CALLS_PER_FIRST_CALL = 3.0  # the warm-up call's run deadline covers a few reference calls
MIN_TIMING_ROUNDS_FLOOR = 5  # never fewer rounds than this, however slow the reference
PROFILED_CALLS = 4  # one untraced and three traced calls (profiling.py)
PROFILER_OVERHEAD = 3.0  # tracing slows each call this much, at worst, for small ops


@dataclass(frozen=True, slots=True)
class RunPlan:
    """How long the run phases should take for a reference of `call_s` seconds per call."""

    call_s: float | None  # seconds per reference forward; None: not measured
    min_timing_rounds: int  # the adaptive loop's minimum after sizing (config's, or fewer)
    rounds_reduced: bool  # fewer than config.min_timing_trials, to fit the timing budget
    correctness_s: float  # estimated work, before the safety factor
    timing_s: float
    run_deadline_s: float  # max(run_timeout_s, what the work needs with margin)
    warmup_base_s: float  # the warm-up call's run deadline (before the activity rule)
    profile_deadline_s: float

    configured_timeout_s: float  # the caller's run_timeout_s (--timeout)
    configured_min_rounds: int  # the caller's min_timing_trials

    @property
    def raised(self) -> bool:
        """True when the run deadline is longer than the caller's --timeout."""
        return self.run_deadline_s > self.configured_timeout_s


def min_timing_rounds(config: EvalConfig, call_s: float | None) -> int:
    """The adaptive loop's minimum rounds: the configured one, unless a slow reference makes
    it blow the timing budget; then as many as the budget holds (at least 5)."""
    wanted = config.min_timing_trials
    if config.timing_trials is not None or call_s is None or call_s <= 0:
        return wanted
    if wanted * call_s <= config.timing_budget_s:
        return wanted
    fits = math.ceil(config.timing_budget_s / call_s)
    return max(MIN_TIMING_ROUNDS_FLOOR, min(wanted, fits))


def plan_run(config: EvalConfig, call_s: float | None) -> RunPlan:
    """Size the run phases for a reference of `call_s` seconds per forward call (assuming
    the candidate is about as fast), with a safety factor; never below the configured
    deadlines."""
    rounds = min_timing_rounds(config, call_s)
    c = max(0.0, call_s or 0.0)
    # Correctness: each trial calls both sides; one fresh-input trial and one more reference
    # call on the pre-load inputs follow the timing.
    correctness_s = (config.correctness_trials + 2) * 2 * c
    warmup_s = 2 * max(3 * c, config.warmup_s)
    if config.timing_trials is not None:
        timed_rounds = config.timing_trials
    else:
        by_budget = math.ceil(config.timing_budget_s / c) + 1 if c > 0 else rounds
        timed_rounds = min(config.max_timing_trials, max(rounds, by_budget))
    timing_s = warmup_s + 2 * timed_rounds * c
    need = _beyond(config.run_timeout_s, SAFETY_FACTOR * (correctness_s + timing_s))
    profile_need = _beyond(
        config.profile_timeout_s, SAFETY_FACTOR * PROFILED_CALLS * PROFILER_OVERHEAD * c
    )
    return RunPlan(
        call_s=call_s,
        min_timing_rounds=rounds,
        rounds_reduced=rounds < config.min_timing_trials,
        correctness_s=correctness_s,
        timing_s=timing_s,
        run_deadline_s=need,
        warmup_base_s=max(config.run_timeout_s, SAFETY_FACTOR * CALLS_PER_FIRST_CALL * c),
        profile_deadline_s=profile_need,
        configured_timeout_s=config.run_timeout_s,
        configured_min_rounds=config.min_timing_trials,
    )


def _beyond(configured_s: float, work_s: float) -> float:
    """The configured deadline, unless the estimated work (with its safety factor) does not
    fit in it; then the work plus a fixed slack."""
    return configured_s if work_s <= configured_s else work_s + FIXED_SLACK_S


HINT_CAP_CALLS = 3.0  # the caller's hint may raise the estimate to this × the measurement


def reference_estimate(config: EvalConfig, measured_s: float | None) -> float | None:
    """Seconds per reference call to size deadlines with. Before the worker's measurement
    exists, the caller's hint (EvalConfig.reference_call_s) alone; once it exists, the
    measurement, raised by the hint to at most HINT_CAP_CALLS × the measurement, so one
    inflated hint cannot stretch every later deadline."""
    hint = config.reference_call_s
    hint = hint if hint is not None and hint > 0 else None
    if measured_s is None or measured_s <= 0:
        return hint
    if hint is None:
        return measured_s
    return max(measured_s, min(hint, HINT_CAP_CALLS * measured_s))


def _per_call(plan: RunPlan | None) -> str:
    if plan is None or plan.call_s is None:
        return ""
    return f"the reference takes ~{plan.call_s:.2g} s per call"


def deadline_note(plan: RunPlan) -> str | None:
    """A log line when the plan moved a limit away from what the caller set."""
    parts = []
    if plan.raised:
        parts.append(
            f"run deadline raised to {plan.run_deadline_s:.0f}s (from --timeout "
            f"{plan.configured_timeout_s:g}s) because {_per_call(plan)}"
        )
    if plan.rounds_reduced:
        parts.append(
            f"timing uses at least {plan.min_timing_rounds} rounds instead of "
            f"{plan.configured_min_rounds} to fit --timing-budget ({_per_call(plan)})"
        )
    return "; ".join(parts) if parts else None


def timeout_error(
    phase: str,
    limit_s: float,
    config: EvalConfig,
    plan: RunPlan | None,
    trials_passed: int = 0,
    compile_seen: bool = False,
) -> str:
    """The one-line error for a deadline that passed in `phase` (see PHASE_ORDER)."""
    title = PHASE_TITLES.get(phase, phase)
    head = f"{title} timed out after {limit_s:.3g}s"
    per_call = _per_call(plan)
    if phase == "reference":
        detail = (
            "before the candidate was loaded (not the candidate's fault); "
            "raise --timeout for a slow reference"
        )
        return f"the reference timed out after {limit_s:.3g}s {detail}; process group killed"
    if phase == "compile":
        return f"{head}; process group killed (raise --compile-timeout)"
    if phase == "warmup":
        hint = (
            "it was still compiling: raise --compile-timeout"
            if compile_seen
            else "no compile activity was seen, so the run deadline applied: raise --timeout"
        )
        return f"{head}; process group killed ({hint})"
    if phase == "run":
        what = f"{trials_passed} of {config.correctness_trials} trials passed"
        extra = f"; {per_call}" if per_call else ""
        return f"{head} ({what}{extra}); process group killed (raise --timeout)"
    if phase == "timing":
        rounds = (
            f"{config.timing_trials} rounds"
            if config.timing_trials is not None
            else f"at least {plan.min_timing_rounds if plan else config.min_timing_trials} rounds"
        )
        extra = f"; {per_call}" if per_call else ""
        return (
            f"{head} ({rounds} of reference + candidate{extra}); process group killed "
            "(raise --timeout or lower --timing-budget / --timing-trials)"
        )
    if phase == "profile":
        return f"{head} (--profile-timeout); the profile was skipped (--no-profile avoids it)"
    if phase == LEASE_PHASE:
        return (
            f"waited {limit_s:.3g}s for the device lease while other evaluations timed on this "
            "device (not the candidate's fault); process group killed (raise lease_timeout_s)"
        )
    return f"{head}; process group killed (raise --timeout)"


@dataclass(slots=True)
class PhaseClock:
    """The deadline in force, as the phases the worker announces move forward (the sandbox
    keeps one per evaluation). Time spent waiting for the device lease counts against no
    deadline but the lease's own: the run deadline is moved on by it (`waited`)."""

    config: EvalConfig
    plan: RunPlan
    phase: str = "start"
    started: float = 0.0
    deadline: float = 0.0
    last_activity: float = 0.0
    compile_seen: bool = False  # compile work was seen in the current activity phase
    run_started: float | None = None
    run_deadline: float = 0.0  # the run phases' deadline, before the lease wait is added
    waited_s: float = 0.0  # finished lease waits

    def enter(self, phase: str, now: float) -> None:
        if self.phase == LEASE_PHASE:
            self.waited_s += now - self.started
        self.phase, self.started, self.last_activity = phase, now, now
        self.compile_seen = False
        if phase in ACTIVITY_PHASES:
            self.deadline = self.activity_deadline()
        elif phase == "compile" or phase == "start":
            self.deadline = now + self.config.compile_timeout_s
        elif phase == LEASE_PHASE:
            self.deadline = now + self.config.lease_timeout_s
        elif phase in RUN_PHASES:
            if self.run_started is None:
                self.run_started = now
                self.run_deadline = now + self.plan.run_deadline_s
            self.deadline = self.run_deadline + self.waited_s
        elif phase == "profile":
            self.deadline = now + self.plan.profile_deadline_s

    def activity(self, now: float) -> None:
        """Compile work seen now: the run deadline restarts, within the compile cap."""
        if self.phase in ACTIVITY_PHASES:
            self.last_activity, self.compile_seen = now, True
            self.deadline = self.activity_deadline()

    def activity_deadline(self) -> float:
        base = self.plan.warmup_base_s
        return min(self.started + self.config.compile_timeout_s, self.last_activity + base)

    def waited(self, now: float) -> float:
        """Seconds spent waiting for the device lease so far (the current wait included)."""
        current = now - self.started if self.phase == LEASE_PHASE else 0.0
        return self.waited_s + current

    def limit_s(self) -> float:
        """How long the deadline that passed was, measured from its phase's start (the lease
        wait left out of the run deadline's span)."""
        if self.phase in RUN_PHASES and self.run_started:
            return self.deadline - self.run_started - self.waited_s
        return self.deadline - self.started
