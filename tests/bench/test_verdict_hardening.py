"""Review defects D1-D4 and the reference's over-estimated call time: a candidate thread that
rewrites the reference's timings, a candidate that signs its own verdict through the worker's
`Evaluation`, a candidate that makes the reference hang to have it blamed, an inflated
`reference_call_s` hint, and a first call's warm-up taken as the reference's call time."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from engine.bench import Benchmarker, EvalConfig, timing
from engine.bench.correctness import Trial
from engine.bench.deadlines import HINT_CAP_CALLS, plan_run, reference_estimate
from engine.bench.evaluate import blame_reference_hang
from engine.bench.outcome import WorkerOutcome
from engine.bench.result import EvalResult, TimingStats
from engine.bench.worker import Evaluation, timing_seal_of, timings_changed

from .conftest import ref

pytestmark = pytest.mark.timeout(240)

HONEST_BODY = """
class ModelNew(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))
        self.b = nn.Parameter(torch.randn(d))
        INIT

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        FORWARD
        return torch.relu(x * self.w + self.b)
"""


def scale_add_candidate(head: str, init: str = "pass", forward: str = "pass") -> str:
    """An honest scale_add candidate with extra module code and lines in __init__/forward."""
    body = HONEST_BODY.replace("INIT", init).replace("FORWARD", forward)
    return "import torch\nfrom torch import nn\n" + head + body


# Review D2: scales the *reference's* measured times by 10 in place, from a thread started in
# __init__ that finds the worker's Evaluation through gc (names built at run time).
FORGE_REF_MS = """
import threading, time
_objs = getattr(__import__("g" + "c"), "get_" + "objects")


def _tamper():
    ev = next((o for o in _objs() if type(o).__name__ == "Evaluation"), None)
    done = set()
    while ev is not None:
        stats = getattr(ev.result, "ref_ms", None)
        if stats is not None and id(stats) not in done:
            for name in ("median", "mean", "min"):
                object.__setattr__(stats, name, getattr(stats, name) * 10)
            done.add(id(stats))
        time.sleep(0.001)
"""

# Review D1: signs a made-up verdict with the worker's own signer and exits first.
FORGE_SIGNED_VERDICT = """
import json, os, sys
_objs = getattr(__import__("g" + "c"), "get_" + "objects")


def _forge():
    ev = next(o for o in _objs() if type(o).__name__ == "Evaluation" and hasattr(o, "sign"))
    stats = getattr(sys.modules["en" + "gine.bench.res" + "ult"], "TimingStats")
    r = ev.result
    r.compiled = r.correct = True
    r.stage = r.error = None
    r.trials_passed = 5
    r.ref_ms = stats(median=5.0, iqr=0.01, mean=5.0, min=4.9, n=30)
    r.new_ms = stats(median=1.0, iqr=0.01, mean=1.0, min=0.99, n=30)
    verdict = r.to_dict()
    with open(ev.request["result_path"], "w") as fh:
        fh.write(json.dumps({"result": verdict, "mac": ev.sign(verdict)}))
    os._exit(0)
"""

# Review D4: after three calls, rebinds torch.relu (which the reference calls) to a spin loop
# whose code claims to be the reference's file, so the stack dump shows the reference.
PATCH_REFERENCE_CALL = """
import os
_REF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference.py")
_ns = {}
exec(compile("def relu(x, *a, **k):\\n    while True:\\n        pass\\n", _REF, "exec"), _ns)
_real_relu = torch.relu
_calls = [0]


def _maybe_patch():
    _calls[0] += 1
    if _calls[0] > 3:
        setattr(torch, "re" + "lu", _ns["relu"])
"""


# -- D2: timings frozen when measured, and candidate threads that outlive timing ------------
def test_timings_rewritten_in_place_no_longer_match_the_seal() -> None:
    stats = TimingStats.from_samples([1.0, 1.1, 1.2])
    other = TimingStats.from_samples([0.5, 0.6])
    outcome = timing.TimingOutcome(stats, other, None, 2.0, False, False, paired_speedup=2.0)
    seal = [timing_seal_of(outcome)]
    result = EvalResult(ref_ms=stats, new_ms=other, paired_speedup=2.0)
    assert not timings_changed(result, seal)
    object.__setattr__(stats, "median", stats.median * 10)  # what the thread does
    assert timings_changed(result, seal)
    assert not timings_changed(result, [])  # no timing yet: nothing to compare


def test_a_thread_that_rewrites_the_reference_timings_fails(benchmarker: Benchmarker) -> None:
    source = scale_add_candidate(
        FORGE_REF_MS, init="threading.Thread(target=_tamper, daemon=True).start()"
    )
    config = EvalConfig(device="cpu", timing_trials=30, warmup_s=0.01, num_threads=2)
    result = benchmarker.evaluate(ref("scale_add"), source, config)
    assert not result.correct, result.summary()
    assert result.speedup is None
    assert {"harness_patched", "untrusted_timing", "background_thread"} & set(result.flags)


def test_an_idle_candidate_thread_alive_after_timing_withholds_the_speedup(
    benchmarker: Benchmarker, fast_config: EvalConfig
) -> None:
    source = scale_add_candidate(
        "import threading, time\n",
        init="threading.Thread(target=lambda: time.sleep(3600), daemon=True).start()",
    )
    result = benchmarker.evaluate(ref("scale_add"), source, fast_config)
    assert result.correct, result.summary()  # it does nothing wrong that can be seen...
    assert result.speedup is None and result.paired_speedup is None  # ...but timing is moot
    assert {"background_thread", "untrusted_timing"} <= set(result.flags)
    assert result.ref_ms is not None and result.new_ms is not None  # figures still reported


def test_a_torch_compile_candidate_keeps_its_speedup(evaluate_files) -> None:
    result = evaluate_files("scale_add", "compiled_honest")
    assert result.correct, result.summary()
    assert result.speedup is not None, result.flags
    assert "untrusted_timing" not in result.flags and "background_thread" not in result.flags


@pytest.mark.slow
def test_an_inductor_candidate_keeps_its_speedup(
    benchmarker: Benchmarker, fast_config: EvalConfig
) -> None:
    from .test_lifecycle import INDUCTOR_CANDIDATE

    fast_config.compile_timeout_s = 300.0
    result = benchmarker.evaluate(ref("scale_add"), INDUCTOR_CANDIDATE, fast_config)
    assert result.correct, result.summary() + result.log[-2000:]
    assert result.speedup is not None, result.flags
    assert "untrusted_timing" not in result.flags, result.log[-2000:]


# -- D1: no signer or request one attribute away from the worker's Evaluation --------------
def test_the_evaluation_holds_no_signer_and_no_request(tmp_path: Path) -> None:
    evaluation = Evaluation(tmp_path, timing.Clocks.capture())
    assert not hasattr(evaluation, "sign") and not hasattr(evaluation, "request")


def test_a_candidate_cannot_sign_its_verdict_through_the_evaluation(
    benchmarker: Benchmarker, fast_config: EvalConfig
) -> None:
    source = scale_add_candidate(FORGE_SIGNED_VERDICT, forward="_forge()")
    result = benchmarker.evaluate(ref("scale_add"), source, fast_config)
    assert not result.correct, result.summary()
    assert result.speedup is None


# -- D4: a reference made to hang by the candidate is the candidate's timeout ---------------
def test_a_reference_made_to_hang_by_the_candidate_is_its_timeout(
    benchmarker: Benchmarker, fast_config: EvalConfig
) -> None:
    source = scale_add_candidate(
        PATCH_REFERENCE_CALL,
        forward="_maybe_patch()\n        return _real_relu(x * self.w + self.b)",
    )
    fast_config.run_timeout_s = 3.0
    result = benchmarker.evaluate(ref("scale_add"), source, fast_config)
    assert (result.correct, result.stage) == (False, "timeout"), result.summary()
    assert "the reference hung after the candidate was loaded" in (result.error or "")
    assert "not the candidate's fault" not in (result.error or "")


def _timed_out(call_s: float, deadline_s: float) -> WorkerOutcome:
    plan = plan_run(EvalConfig(run_timeout_s=deadline_s), call_s)
    return WorkerOutcome(
        wait_status=9,
        timed_out_phase="run",
        last_phase="run",
        wall_s=deadline_s,
        compile_s=None,
        deadline_s=deadline_s,
        plan=plan,
    )


def test_a_reference_hang_within_a_few_of_its_calls_stays_the_references() -> None:
    slow = EvalResult(stage="timeout", error="correctness timed out after 3s")
    blame_reference_hang(slow, _timed_out(call_s=2.0, deadline_s=3.0))
    assert slow.stage == "reference" and "not the candidate's fault" in (slow.error or "")
    fast = EvalResult(stage="timeout", error="correctness timed out after 3s")
    blame_reference_hang(fast, _timed_out(call_s=0.0005, deadline_s=3.0))
    assert fast.stage == "timeout" and "~0.0005 s per call" in (fast.error or "")


# -- D3: the caller's hint raises the estimate a little, never a lot ------------------------
def test_an_inflated_hint_is_capped_at_a_few_measured_calls() -> None:
    measured = 0.001
    inflated = EvalConfig(reference_call_s=100.0)
    assert reference_estimate(inflated, measured) == pytest.approx(HINT_CAP_CALLS * measured)
    assert reference_estimate(inflated, None) == 100.0  # before any measurement: the hint
    modest = EvalConfig(reference_call_s=0.002)
    assert reference_estimate(modest, measured) == pytest.approx(0.002)
    assert reference_estimate(EvalConfig(reference_call_s=0.0001), measured) == measured
    assert reference_estimate(EvalConfig(), measured) == measured
    capped = plan_run(inflated, reference_estimate(inflated, measured))
    assert capped.run_deadline_s == inflated.run_timeout_s  # not raised for a 1 ms reference


# -- the reference's steady call time, not its first call's warm-up -------------------------
class _WarmsUpOnce(torch.nn.Module):
    """First call pays a one-time 45 ms (like lazy initialisation); later calls are instant."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 1:
            time.sleep(0.045)
        return x + 1


def test_the_reference_call_time_is_its_steady_time(tmp_path: Path) -> None:
    evaluation = Evaluation(tmp_path, timing.Clocks.capture())
    model = _WarmsUpOnce()
    evaluation.measure_reference(model, Trial(seed=0, pristine=[torch.ones(8)]))
    assert model.calls == 2
    assert evaluation.reference_call_s is not None and evaluation.reference_call_s < 0.03


def test_the_honest_candidate_still_gets_a_speedup(evaluate_files) -> None:
    result = evaluate_files("scale_add", "honest")
    assert result.correct and result.speedup is not None, result.summary()
    assert "untrusted_timing" not in result.flags
