"""The device lease (engine/bench/lease.py): one timing at a time per device, across threads
and processes; a SIGKILLed holder releases it; the wait is reported (`lease_wait_s`) and
counts against no deadline but its own; a timing that skips the lease is flagged; and two
timings of one kernel started side by side agree with the same kernel timed alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.bench import Benchmarker, EvalConfig, EvalResult
from engine.bench import lease as lease_module
from engine.bench.lease import DeviceLeases, lock_names
from engine.bench.signed_files import LEASE_GRANT_FILE, lease_grant_mac

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[2]

ABS_REFERENCE = """\
import torch
from torch import nn


class Model(nn.Module):
    def forward(self, x):
        return torch.abs(x)


def get_inputs():
    return [torch.rand(64, 128)]


def get_init_inputs():
    return []
"""
ABS_CANDIDATE = ABS_REFERENCE.replace("class Model(", "class ModelNew(")

# Compute-bound, a few ms per call with both cores: contention would show in its timings.
MATMUL_REFERENCE = """\
import torch
from torch import nn


class Model(nn.Module):
    def forward(self, a, b):
        return a @ b


def get_inputs():
    return [torch.randn(384, 384), torch.randn(384, 384)]


def get_init_inputs():
    return []
"""
MATMUL_CANDIDATE = MATMUL_REFERENCE.replace("class Model(", "class ModelNew(")

# Skips the lease from its last correctness trial on (the harness catches the patch only at
# its next integrity check, after timing).
BYPASS_CANDIDATE = """\
import sys

import torch
from torch import nn

CALLS = [0]


class ModelNew(nn.Module):
    def forward(self, x):
        CALLS[0] += 1
        if CALLS[0] == 3:  # warm-up call, trial 1, trial 2
            sys.modules["engine.bench.lease"].await_grant = lambda *args: None
        return torch.abs(x)
"""

HOLDER = """\
import json, sys, time
from engine.bench.lease import DeviceLeases
leases = DeviceLeases(sys.argv[1])
for _ in range(int(sys.argv[2])):
    lease, waited = leases.acquire("cpu", timeout_s=60)
    start = time.time()
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
    end = time.time()
    lease.release()
    print(json.dumps([start, end]), flush=True)
"""


def quick(**overrides: object) -> EvalConfig:
    values: dict[str, object] = dict(
        device="cpu",
        correctness_trials=2,
        timing_budget_s=0.3,
        warmup_s=0.01,
        compile_timeout_s=120.0,
        run_timeout_s=30.0,
        num_threads=2,
    )
    values.update(overrides)
    return EvalConfig(**values)  # type: ignore[arg-type]


def holder(lease_dir: Path, times: int, hold_s: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lease_dir), str(times), str(hold_s)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        start_new_session=True,
    )


@pytest.fixture(scope="module")
def lease_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("leases")


@pytest.fixture(scope="module")
def leased_bench(
    tmp_path_factory: pytest.TempPathFactory, lease_dir: Path
) -> Iterator[Benchmarker]:
    """Two warm sandboxes, so two evaluations can run at once from the start."""
    cache = tmp_path_factory.mktemp("lease-cache")
    with Benchmarker(cache_dir=cache, lease_dir=lease_dir) as bench:
        bench.warm_up(2)
        yield bench


def held_for(lease_dir: Path, seconds: float) -> threading.Timer:
    """Take the CPU lease in this process now and give it back after `seconds`."""
    lease = DeviceLeases(lease_dir).try_acquire("cpu")
    assert lease is not None, "the lease is not free"
    timer = threading.Timer(seconds, lease.release)
    timer.start()
    return timer


# --- the lock itself --------------------------------------------------------------------


def test_a_sigkilled_holder_releases_the_lease(tmp_path: Path) -> None:
    proc = holder(tmp_path, 1, 120.0)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        assert DeviceLeases(tmp_path).try_acquire("cpu") is None  # held by the other process
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    lease, waited = DeviceLeases(tmp_path).acquire("cpu", timeout_s=10)
    assert lease.held and waited < 5
    lease.release()


def test_processes_take_turns(tmp_path: Path) -> None:
    procs = [holder(tmp_path, 3, 0.2) for _ in range(2)]
    spans: list[tuple[float, float, int]] = []
    for index, proc in enumerate(procs):
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        spans += [(*json.loads(line), index) for line in out.splitlines() if line.startswith("[")]
    assert len(spans) == 6
    spans.sort()
    for (_, end, _), (start, _, _) in zip(spans, spans[1:], strict=False):
        assert start >= end, f"two holders at once: {spans}"
    assert {index for *_, index in spans} == {0, 1}


def test_core_sets_overlap_or_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    leases = DeviceLeases(tmp_path)
    monkeypatch.setattr(lease_module, "cpu_cores", lambda: [0, 1])
    first = leases.try_acquire("cpu")
    assert first is not None and first.names == ["cpu0.lock", "cpu1.lock"]
    monkeypatch.setattr(lease_module, "cpu_cores", lambda: [1, 2])
    assert leases.try_acquire("cpu") is None  # core 1 is taken: all or nothing
    assert DeviceLeases(tmp_path).try_acquire("cpu") is None
    monkeypatch.setattr(lease_module, "cpu_cores", lambda: [2, 3])
    disjoint = leases.try_acquire("cpu")
    assert disjoint is not None  # other cores time at once
    monkeypatch.setattr(lease_module, "cpu_cores", lambda: [2])
    assert leases.try_acquire("cpu") is None
    first.release()
    disjoint.release()
    assert leases.try_acquire("cpu") is not None  # core 1 was released with its set too


def test_gpu_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-6f1e, GPU-0a2b")
    assert lock_names("cuda") == ["cuda-GPU-6f1e.lock"]  # the worker's cuda:0
    monkeypatch.setattr(lease_module, "_gpu_uuids", lambda: {"1": "GPU-0a2b"})
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert lock_names("cuda") == ["cuda-GPU-0a2b.lock"]  # index 1 and its UUID share a lock
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert lock_names("cuda") == ["cuda-3.lock"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert lock_names("cuda") == ["cuda-0.lock"]


# --- through the benchmarker ------------------------------------------------------------


@pytest.mark.slow
def test_the_wait_is_reported_and_spares_the_run_deadline(
    leased_bench: Benchmarker, lease_dir: Path
) -> None:
    """A run deadline of 2 s, a lease held for 5 s: the wait must not count against it."""
    timer = held_for(lease_dir, 5.0)
    try:
        result = leased_bench.evaluate(ABS_REFERENCE, ABS_CANDIDATE, quick(run_timeout_s=2.0))
    finally:
        timer.join()
    assert result.correct, result.error
    assert result.lease_wait_s is not None and 2.5 < result.lease_wait_s < 60
    assert "[stark] phases:" in result.log and " lease " in result.log
    assert "waited" in result.summary() and "device lease" in result.summary()


@pytest.mark.slow
def test_a_lease_never_granted_is_the_harness_problem(
    leased_bench: Benchmarker, lease_dir: Path
) -> None:
    timer = held_for(lease_dir, 8.0)
    try:
        result = leased_bench.evaluate(ABS_REFERENCE, ABS_CANDIDATE, quick(lease_timeout_s=1.0))
    finally:
        timer.join()
    assert not result.correct and result.stage == "harness"
    assert "device lease" in (result.error or "")
    assert result.trials_passed == 2  # the checkpoint before the wait is kept


@pytest.mark.slow
def test_timing_without_the_grant_is_flagged(leased_bench: Benchmarker, lease_dir: Path) -> None:
    timer = held_for(lease_dir, 6.0)  # so the grant cannot come in time
    try:
        result = leased_bench.evaluate(ABS_REFERENCE, BYPASS_CANDIDATE, quick())
    finally:
        timer.join()
    assert "lease_bypassed" in result.flags and "untrusted_timing" in result.flags
    assert result.speedup is None
    assert not result.correct  # the patched harness module is caught after timing as well


def _band(alone: list[EvalResult]) -> tuple[float, float]:
    """The single-job spread: every alone run's median ± IQR, widened by a fifth of the
    median (the shared machine's load drifts between runs)."""
    medians = [r.new_ms.median for r in alone if r.new_ms]
    iqrs = [r.new_ms.iqr for r in alone if r.new_ms]
    slack = 0.2 * sum(medians) / len(medians)
    low = min(m - i for m, i in zip(medians, iqrs, strict=True)) - slack
    high = max(m + i for m, i in zip(medians, iqrs, strict=True)) + slack
    return low, high


@pytest.mark.slow
def test_two_timings_side_by_side_agree_with_one_alone(leased_bench: Benchmarker) -> None:
    """Without the lease, two 2-thread timings on this 2-core machine share it and each call
    takes about twice as long; with it they take turns and time as one job alone does."""
    config = quick(timing_budget_s=1.0, warmup_s=0.05)
    alone = [leased_bench.evaluate(MATMUL_REFERENCE, MATMUL_CANDIDATE, config)]
    start = threading.Barrier(2)
    side_by_side: list[EvalResult] = []

    def run() -> None:
        start.wait(timeout=60)
        side_by_side.append(leased_bench.evaluate(MATMUL_REFERENCE, MATMUL_CANDIDATE, config))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    alone.append(leased_bench.evaluate(MATMUL_REFERENCE, MATMUL_CANDIDATE, config))

    assert len(side_by_side) == 2 and all(r.correct for r in side_by_side + alone)
    waits = sorted(r.lease_wait_s or 0.0 for r in side_by_side)
    assert waits[1] > 0.2, f"the second timing did not wait for the first: {waits}"
    low, high = _band(alone)
    for result in side_by_side:
        assert result.new_ms is not None
        assert low <= result.new_ms.median <= high, (
            f"side by side {result.new_ms} vs alone {[str(r.new_ms) for r in alone]}"
        )


def test_the_fork_servers_dont_grow_for_sequential_use(tmp_path: Path) -> None:
    with Benchmarker(cache_dir=tmp_path) as bench:
        for _ in range(2):
            assert bench._checkout() is bench.sandbox
            bench._checkin(bench.sandbox)
        first = bench._checkout()
        second = bench._checkout()  # a concurrent evaluation gets a sandbox of its own
        assert first is bench.sandbox and second is not first
        bench._checkin(second)
        bench._checkin(first)
        assert bench._checkout() is first


def test_the_worker_starts_only_on_its_own_grant(tmp_path: Path) -> None:
    """A grant file a candidate forges (without the nonce) does not start the timing."""
    expected = lease_grant_mac("n" * 32)
    granted = threading.Event()

    def wait() -> None:
        lease_module.await_grant(tmp_path, expected)
        granted.set()

    threading.Thread(target=wait, daemon=True).start()
    (tmp_path / LEASE_GRANT_FILE).write_text(lease_grant_mac("forged-nonce" * 3))
    assert not granted.wait(0.3)
    (tmp_path / LEASE_GRANT_FILE).write_text(expected)
    assert granted.wait(5)
