"""Timing noise must be reported, not hidden: a spread or a drift above the threshold flags the
verdict `noisy`, CPU time that other processes took during timing is measured and flagged
`external_load`, and the thread count both sides ran with is stated."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import torch

from engine.bench import EvalConfig, timing
from engine.bench.correctness import KernelClock
from engine.bench.load_monitor import EXTERNAL_LOAD_CORES, LoadWindow

pytestmark = pytest.mark.timeout(180)

BUSY_LOOP_S = 30.0  # upper bound; the loop is killed as soon as the test is done

JITTERY_REFERENCE = """
import random
import time

import torch
from torch import nn


class Model(nn.Module):
    def forward(self, x):
        time.sleep(0.0005 + 0.003 * random.random())  # 0.5-3.5 ms, uniformly
        return x * 2.0


def get_inputs():
    return [torch.randn(16, 16)]


def get_init_inputs():
    return []
"""

SLEEPY_REFERENCE = """
import time

import torch
from torch import nn


class Model(nn.Module):
    def forward(self, x):
        time.sleep(0.004)  # steady and CPU-free: any busy CPU is someone else's
        return x * 2.0


def get_inputs():
    return [torch.randn(16, 16)]


def get_init_inputs():
    return []
"""


def identical(reference: str) -> str:
    return reference + "\n\nclass ModelNew(Model):\n    pass\n"


@pytest.fixture
def busy_loop() -> Iterator[int]:
    """Another process spinning on one core, bounded in time and killed afterwards. It is
    started through a parent that exits at once, so it is nobody's descendant here (the load
    monitor leaves the measuring process's own tree out)."""
    spin = f"import time\nend = time.monotonic() + {BUSY_LOOP_S}\nwhile time.monotonic() < end:\n    pass\n"
    launcher = (
        "import subprocess, sys\n"
        "quiet = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, "
        "stderr=subprocess.DEVNULL)\n"
        f"print(subprocess.Popen([sys.executable, '-c', {spin!r}], **quiet).pid)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", launcher], capture_output=True, text=True, timeout=30, check=True
    )
    pid = int(out.stdout.strip())
    try:
        time.sleep(0.2)  # let it reach the loop
        yield pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- in process: the Timer -----------------------------------------------------------------
def make_timer() -> timing.Timer:
    return timing.Timer(torch.device("cpu"), 1, timing.Clocks.capture(), KernelClock())


def no_check(new_out: object, ref_out: object, full: bool) -> None:
    pass


def sleeper(seconds: object) -> object:
    """A 'model' that sleeps for `seconds()` and returns its input."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        time.sleep(seconds())  # type: ignore[operator]
        return x

    return forward


def test_a_jittery_side_is_flagged_noisy() -> None:
    config = EvalConfig(timing_trials=20, warmup_s=0.0)
    steps = iter([0.0005, 0.004] * 1000)  # alternating 0.5 ms / 4 ms calls
    jittery = sleeper(lambda: next(steps))
    steady = sleeper(lambda: 0.001)
    outcome = make_timer().time_both(steady, jittery, [torch.ones(4)], config, no_check)
    assert outcome.new_ms.iqr / outcome.new_ms.median > config.noisy_threshold
    assert outcome.noisy


def test_a_machine_that_slows_down_halfway_is_flagged_drift() -> None:
    config = EvalConfig(timing_trials=20, warmup_s=0.0)
    calls = {"n": 0}

    def seconds() -> float:
        calls["n"] += 1
        return 0.001 if calls["n"] <= 6 + 20 else 0.002  # 6 warm-up calls, then 10 rounds

    model = sleeper(seconds)
    outcome = make_timer().time_both(model, model, [torch.ones(4)], config, no_check)
    assert outcome.drift is not None and outcome.drift > config.noisy_threshold
    assert outcome.noisy


def test_rounds_alternate_which_side_goes_first() -> None:
    order: list[str] = []

    def side(name: str) -> object:
        def forward(x: torch.Tensor) -> torch.Tensor:
            order.append(name)
            return x

        return forward

    config = EvalConfig(timing_trials=4, warmup_s=0.0)
    make_timer().time_both(side("ref"), side("new"), [torch.ones(4)], config, no_check)
    timed = order[2 * timing.MIN_WARMUP_CALLS :]
    assert timed == ["ref", "new", "new", "ref", "ref", "new", "new", "ref"]


def test_drift_compares_the_halves_in_round_order() -> None:
    assert timing.drift([1.0] * 20) == 0.0
    assert timing.drift([1.0] * 10 + [1.5] * 10) == pytest.approx(0.5 / 1.25)
    assert timing.drift([1.0] * 9) is None  # too few samples per half to tell


def test_paired_speedup_cancels_drift_common_to_both_sides() -> None:
    ref = [2.0, 2.0, 4.0, 4.0, 8.0]  # the machine slows down, both sides alike
    new = [1.0, 1.0, 2.0, 2.0, 4.0]
    assert timing.paired_speedup(ref, new) == 2.0


def test_load_window_sees_another_process(busy_loop: int) -> None:
    window = LoadWindow.begin()
    time.sleep(1.0)  # this process is idle: the busy CPU is someone else's
    load = window.finish()
    assert load is not None and load > EXTERNAL_LOAD_CORES, load


def test_load_window_too_short_to_tell_reports_nothing() -> None:
    assert LoadWindow.begin().finish() is None


# -- end to end, through the sandbox ------------------------------------------------------
def test_jittery_timings_flag_the_verdict_noisy(benchmarker, fast_config: EvalConfig) -> None:  # noqa: ANN001
    config = EvalConfig.from_dict({**fast_config.to_dict(), "timing_trials": 20})
    result = benchmarker.evaluate(JITTERY_REFERENCE, identical(JITTERY_REFERENCE), config)
    assert result.correct, result.summary()
    assert "noisy" in result.flags and result.noisy, result.summary()
    assert result.threads == fast_config.num_threads == 2
    text = result.summary()
    assert "(noisy)" in text and "noisy: a side's IQR/median" in text, text
    assert f"{result.ref_ms.median:.3f} ± {result.ref_ms.iqr:.3f} ms" in text, text
    assert "cpu, 2 threads" in text, text
    data = result.to_dict()
    assert data["threads"] == 2 and data["ref_ms"]["iqr"] > 0 and data["new_ms"]["iqr"] > 0


def test_default_thread_count_is_pinned_and_reported(benchmarker, fast_config: EvalConfig) -> None:  # noqa: ANN001
    config = EvalConfig.from_dict({**fast_config.to_dict(), "num_threads": None})
    result = benchmarker.evaluate(SLEEPY_REFERENCE, identical(SLEEPY_REFERENCE), config)
    assert result.correct, result.summary()
    assert isinstance(result.threads, int) and result.threads >= 1, result.threads


def test_a_busy_process_alongside_is_reported_as_external_load(
    benchmarker,  # noqa: ANN001
    fast_config: EvalConfig,
    busy_loop: int,
) -> None:
    # 60 rounds of two 4 ms sleeps: a timing window of about half a second.
    config = EvalConfig.from_dict({**fast_config.to_dict(), "timing_trials": 60})
    result = benchmarker.evaluate(SLEEPY_REFERENCE, identical(SLEEPY_REFERENCE), config)
    assert alive(busy_loop), "the busy loop ended before the evaluation did"
    assert result.correct, result.summary()
    assert result.external_load is not None and result.external_load > EXTERNAL_LOAD_CORES
    assert "external_load" in result.flags, result.flags
    assert "external load: other processes used" in result.summary()
