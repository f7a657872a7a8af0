"""Issues 11 and 16: a memory limit on what is resident (not address space), a warm-up that
gets the compile deadline only while something compiles, deadlines sized from the
reference's own call time, a profiler that can never fail a verdict, and timeouts that name
their phase, keep what was measured, and never blame the candidate for the reference."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.bench import Benchmarker, EvalConfig
from engine.bench.deadlines import plan_run, timeout_error
from engine.bench.memory_guard import address_space_cap
from engine.bench.signed_files import authentic_phase_info, phase_line, run_phase_token

from .conftest import candidate, ref

pytestmark = pytest.mark.timeout(240)

SCALE_ADD_MODEL = """
import time
import torch
from torch import nn

N, D = 64, 128


class Model(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))
        self.b = nn.Parameter(torch.randn(d))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        BEFORE
        return torch.relu(x * self.w + self.b)


def get_inputs() -> list[torch.Tensor]:
    return [torch.randn(N, D)]


def get_init_inputs() -> list[int]:
    return [D]
"""


def reference_with(before_return: str) -> str:
    """scale_add with `before_return` (one line of code) at the top of its forward."""
    return SCALE_ADD_MODEL.replace("BEFORE", before_return)


def candidate_with(before_return: str) -> str:
    """The honest scale_add candidate with `before_return` at the top of its forward."""
    source = candidate("honest")
    head = "    def forward(self, x: torch.Tensor) -> torch.Tensor:\n"
    assert head in source
    return "import time\n" + source.replace(head, head + f"        {before_return}\n")


# -- the deadline plan and the phase protocol (no worker) -----------------------------------
def test_plan_keeps_the_callers_deadline_for_a_fast_reference() -> None:
    config = EvalConfig(run_timeout_s=3.0)
    plan = plan_run(config, 0.0005)
    assert plan.run_deadline_s == 3.0 and not plan.raised and not plan.rounds_reduced
    assert plan.min_timing_rounds == config.min_timing_trials


def test_plan_fits_a_slow_reference() -> None:
    config = EvalConfig(run_timeout_s=120.0, timing_budget_s=4.0, correctness_trials=5)
    plan = plan_run(config, 5.0)
    # 30 rounds of a 5 s reference blow a 4 s budget: the minimum drops to 5, and says so.
    assert plan.rounds_reduced and plan.min_timing_rounds == 5
    # trials (7 x 2 calls) + warm-up (2 x 3) + 5 rounds (2 calls), x2 margin: > 120 s.
    assert plan.raised and plan.run_deadline_s >= 2 * (70 + 30 + 50)
    assert plan.profile_deadline_s > config.profile_timeout_s


def test_signed_phase_extras_cannot_be_changed() -> None:
    nonce = "n" * 32
    line = phase_line(nonce, "compile", {"call_s": "0.500000"}).split()
    assert authentic_phase_info(line, nonce) == ("compile", {"call_s": "0.500000"})
    forged = [line[0], line[1], "call_s=999"]
    assert authentic_phase_info(forged, nonce) is None
    assert authentic_phase_info(["timing", run_phase_token(nonce, "timing")], nonce) == (
        "timing",
        {},
    )


def test_timeout_errors_name_the_phase_and_the_flag() -> None:
    config = EvalConfig()
    plan = plan_run(config, 1.1)
    text = timeout_error("run", 120.0, config, plan, trials_passed=3)
    assert text.startswith("correctness timed out after 120s (3 of 5 trials passed")
    assert "~1.1 s per call" in text and "--timeout" in text
    assert "--timing-budget" in timeout_error("timing", 120.0, config, plan)
    assert "--profile-timeout" in timeout_error("profile", 30.0, config, plan)
    assert "not the candidate's fault" in timeout_error("reference", 120.0, config, plan)


def test_fast_fail_address_space_cap_leaves_room_for_reservations() -> None:
    cap = address_space_cap(2 << 30, 700 << 20, cpus=64)
    assert cap > (2 << 30) + (700 << 20) + 64 * (128 << 20)  # an arena per CPU fits
    assert cap < 6 * (1 << 30) + 64 * (256 << 20)


# -- 1. memory: resident, not address space ------------------------------------------------
def test_a_limit_below_the_address_space_still_runs_the_reference(evaluate_files) -> None:
    """The worker maps ~0.7 GiB (torch, thread arenas) but keeps ~0.2 GiB resident: under
    RLIMIT_AS the reference itself failed (stage 'reference'); resident, it passes."""
    result = evaluate_files("scale_add", "honest", memory_limit_gb=0.5)
    assert result.correct, result.summary() + result.log[-2000:]


def test_memory_growing_past_the_limit_is_killed_and_blamed_on_the_candidate(
    benchmarker: Benchmarker, fast_config: EvalConfig
) -> None:
    grow = "self.keep = [torch.ones(8 << 20) for _ in range(48)]  # 1.5 GiB, 32 MiB at a time"
    fast_config.memory_limit_gb = 0.5
    result = benchmarker.evaluate(ref("scale_add"), candidate_with(grow), fast_config)
    assert (result.correct, result.stage) == (False, "runtime"), result.summary()
    assert "candidate exceeded the memory limit of 0.5 GiB resident (peak" in result.error
    assert "process group killed" in result.error


def test_a_reference_alone_over_the_limit_is_the_references_verdict(
    benchmarker: Benchmarker, fast_config: EvalConfig
) -> None:
    grow = "self.keep = [torch.ones(8 << 20) for _ in range(48)]"
    fast_config.memory_limit_gb = 0.5
    result = benchmarker.evaluate(reference_with(grow), candidate("honest"), fast_config)
    assert (result.correct, result.stage) == (False, "reference"), result.summary()
    assert "the reference alone exceeded the memory limit of 0.5 GiB" in result.error
    assert "not the candidate's fault" in result.error


# -- 2. the first call: compile deadline only while compiling --------------------------------
def test_endless_first_call_meets_the_run_deadline_not_the_compile_one(
    benchmarker: Benchmarker, fast_config: EvalConfig
) -> None:
    fast_config.run_timeout_s, fast_config.compile_timeout_s = 5.0, 300.0
    start = time.monotonic()
    result = benchmarker.evaluate(ref("scale_add"), candidate_with("while True: pass"), fast_config)
    elapsed = time.monotonic() - start
    assert (result.compiled, result.stage) == (True, "timeout"), result.summary()
    assert elapsed < 5.0 + 10.0, elapsed
    assert "first call (JIT compile / warm-up) timed out after 5s" in result.error
    assert "no compile activity was seen" in result.error and "--timeout" in result.error
    assert result.error_location is not None and result.error_location.function == "forward"


@pytest.fixture
def cold_inductor_bench(tmp_path: Path) -> Iterator[Benchmarker]:
    """A Benchmarker whose fork server has an empty Inductor cache: torch.compile builds."""
    cache = tmp_path
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCHINDUCTOR_CACHE_DIR", str(cache / "inductor"))
        patch.setenv("TRITON_CACHE_DIR", str(cache / "triton"))
        bench = Benchmarker(cache_dir=cache / "stark")
        bench.warm_up()
    try:
        yield bench
    finally:
        bench.close()


INDUCTOR_CANDIDATE = """
import torch
from torch import nn


def _scale_add_relu(x, w, b):
    return torch.relu(x * w + b)


fused = None  # compiled on first call, so importing dynamo happens there too


class ModelNew(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))
        self.b = nn.Parameter(torch.randn(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        global fused
        if fused is None:
            fused = torch.compile(_scale_add_relu)  # Inductor: generates and builds C++
        return fused(x, self.w, self.b)
"""


def phase_seconds(log: str, phase: str) -> float:
    """How long a phase took, from the sandbox's '[stark] phases: ...' line."""
    line = next(line for line in log.splitlines() if line.startswith("[stark] phases:"))
    spans = dict(item.split() for item in line.split(":", 1)[1].split(","))
    return float(spans[phase].rstrip("s"))


@pytest.mark.slow
def test_a_real_inductor_build_on_first_call_outlives_a_short_run_deadline(
    cold_inductor_bench: Benchmarker, fast_config: EvalConfig
) -> None:
    fast_config.run_timeout_s, fast_config.compile_timeout_s = 2.0, 300.0
    result = cold_inductor_bench.evaluate(ref("scale_add"), INDUCTOR_CANDIDATE, fast_config)
    assert result.correct, result.summary() + result.log[-3000:]
    # The build took longer than the run deadline: only the activity rule let it finish.
    assert phase_seconds(result.log, "warmup") > fast_config.run_timeout_s


@pytest.mark.slow
def test_a_build_longer_than_the_compile_deadline_says_it_was_compiling(
    cold_inductor_bench: Benchmarker, fast_config: EvalConfig
) -> None:
    fast_config.run_timeout_s, fast_config.compile_timeout_s = 2.0, 4.0
    result = cold_inductor_bench.evaluate(ref("scale_add"), INDUCTOR_CANDIDATE, fast_config)
    if result.correct:
        pytest.skip("a cold Inductor build took under 4 s on this machine")
    assert (result.compiled, result.stage) == (True, "timeout"), result.summary()
    assert "first call (JIT compile / warm-up) timed out after 4s" in result.error
    assert "it was still compiling: raise --compile-timeout" in result.error


# -- 3. deadlines that fit the problem --------------------------------------------------------
def test_a_slow_reference_raises_the_run_deadline_and_reduces_rounds(
    benchmarker: Benchmarker, fast_config: EvalConfig
) -> None:
    fast_config.run_timeout_s = 3.0
    fast_config.correctness_trials = 3
    fast_config.timing_trials = None
    fast_config.timing_budget_s = 1.0
    fast_config.profile = True
    slow = reference_with("time.sleep(0.5)")
    result = benchmarker.evaluate(slow, candidate("honest"), fast_config)
    assert result.correct, result.summary() + result.log[-2000:]
    assert result.profile, "the profiler had its own budget and finished"
    assert {"run_deadline_raised", "timing_rounds_reduced"} <= set(result.flags)
    assert "run deadline raised to" in result.log and "~0.5 s per call" in result.log
    assert result.ref_ms is not None and result.ref_ms.n >= 5
    assert result.ref_ms.median == pytest.approx(500, rel=0.2)


def test_a_profiler_timeout_keeps_the_verdict(
    benchmarker: Benchmarker, fast_config: EvalConfig
) -> None:
    hang_when_profiled = "while torch.autograd.profiler._is_profiler_enabled: time.sleep(0.05)"
    fast_config.profile, fast_config.profile_timeout_s = True, 2.0
    result = benchmarker.evaluate(ref("scale_add"), candidate_with(hang_when_profiled), fast_config)
    assert result.correct, result.summary() + result.log[-2000:]
    assert "profile_skipped" in result.flags and result.profile is None
    assert result.trials_passed == 5 and result.ref_ms is not None
    assert result.speedup is not None
    assert "profiling timed out after 2s" in result.log and "--no-profile" in result.log


def test_a_timing_timeout_names_the_phase_and_keeps_the_trials(
    benchmarker: Benchmarker, fast_config: EvalConfig
) -> None:
    # 1 warm-up call + 5 trials; then every call hangs (in timing's warm-up).
    hang_later = "while self.calls > 6: time.sleep(0.05)"
    source = candidate_with(hang_later).replace(
        "        super().__init__()\n", "        super().__init__()\n        self.calls = 0\n", 1
    )
    source = source.replace(hang_later, f"self.calls += 1\n        {hang_later}")
    fast_config.run_timeout_s = 3.0
    result = benchmarker.evaluate(ref("scale_add"), source, fast_config)
    assert (result.compiled, result.correct, result.stage) == (True, False, "timeout")
    assert result.error.startswith("timing timed out after 3s"), result.error
    assert "--timing-budget" in result.error and "--timeout" in result.error
    assert result.trials_passed == 5 and result.correctness_trials == 5
    assert result.max_abs_err is not None
    assert result.error_location is not None and result.error_location.function == "forward"


HANG_IN_FINAL_CHECKS = """
import sys


def _inside(name):
    frame = sys._getframe()
    while frame is not None:
        if frame.f_code.co_name == name:
            return True
        frame = frame.f_back
    return False
"""


def test_a_timeout_after_timing_keeps_the_timings(
    benchmarker: Benchmarker, fast_config: EvalConfig
) -> None:
    source = HANG_IN_FINAL_CHECKS + candidate_with(
        'while _inside("fresh_input_trial"): time.sleep(0.05)'
    )
    fast_config.run_timeout_s = 3.0
    result = benchmarker.evaluate(ref("scale_add"), source, fast_config)
    assert (result.correct, result.stage) == (False, "timeout"), result.summary()
    assert result.error.startswith("final checks timed out after 3s"), result.error
    assert result.trials_passed == 5
    assert result.ref_ms is not None and result.new_ms is not None
    assert result.ref_ms.n == fast_config.timing_trials


def test_a_reference_that_hangs_is_the_references_verdict(
    benchmarker: Benchmarker, fast_config: EvalConfig
) -> None:
    fast_config.run_timeout_s = 3.0
    hung = reference_with("while True: time.sleep(0.05)")
    result = benchmarker.evaluate(hung, candidate("honest"), fast_config)
    assert (result.compiled, result.stage) == (False, "reference"), result.summary()
    assert "the reference timed out after 3s before the candidate was loaded" in result.error
    assert "not the candidate's fault" in result.error
    assert result.error_location is None


def test_a_reference_hanging_after_the_candidate_loaded_is_not_excused(
    benchmarker: Benchmarker, fast_config: EvalConfig
) -> None:
    """Once the candidate is loaded it may have changed what the reference calls, so a hang far
    beyond the reference's pre-load call time is the candidate's timeout (review D4); a hang
    within a few of its calls stays the reference's (test_verdict_hardening.py)."""
    fast_config.run_timeout_s = 3.0
    # Two calls measure it before the load, the third is trial 1's: it hangs in trial 2.
    later = reference_with("while self.calls > 3: time.sleep(0.05)")
    result = benchmarker.evaluate(later, candidate("honest"), fast_config)
    assert result.stage == "timeout", result.summary() + result.log[-2000:]
    assert "the reference hung after the candidate was loaded" in result.error
    assert result.trials_passed == 1
    assert result.error_location is None  # never a line of the reference as the candidate's


def test_the_log_dump_is_only_believed_after_the_kill_request(tmp_path: Path) -> None:
    from engine.bench.post_mortem import crash_location, side_running

    cand, refp = tmp_path / "candidate.py", tmp_path / "reference.py"
    dump = (
        "Thread 0x00007f01 (most recent call first):\n"
        '  File "/x/threading.py", line 1 in wait\n\n'
        "Current thread 0x00007f02 (most recent call first):\n"
        f'  File "{refp}", line 9 in forward\n'
        '  File "/x/engine/bench/forkserver.py", line 125 in _run_child\n'
    )
    assert side_running(dump, refp, cand) == "reference"
    assert crash_location(dump, cand) is None
    cand_dump = dump.replace(f'"{refp}", line 9', f'"{cand}", line 4')
    assert side_running(cand_dump, refp, cand) == "candidate"
    location = crash_location(cand_dump, cand)
    assert location is not None and location.line == 4


def test_bench_cli_passes_timing_budget_and_profile_timeout() -> None:
    import argparse

    from engine.cli.bench import config_from_args, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(
        ["bench", "c.py", "--timing-budget", "1.5", "--profile", "--profile-timeout", "12"]
    )
    config = config_from_args(args)
    assert (config.timing_budget_s, config.profile, config.profile_timeout_s) == (1.5, True, 12.0)
