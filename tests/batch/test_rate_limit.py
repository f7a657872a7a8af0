"""The run-wide limit on model calls (engine/agents/rate_limit.py): at most N in flight and
R started per minute across processes, enforced on real requests to the fake endpoint."""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from engine.agents.base import AgentError
from engine.agents.rate_limit import CallLimiter, RateLimits, RateLimitTimeout
from tests.batch.limit_worker import ask_endpoint, hold_slots
from tests.fakes import FakeOpenAIServer, FakeReply

SPAWN = multiprocessing.get_context("spawn")


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    current = peak = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


@pytest.mark.timeout(120)
def test_concurrent_calls_are_capped_across_processes(tmp_path: Path) -> None:
    log = tmp_path / "intervals.jsonl"
    limits = RateLimits(max_concurrent=2)
    with ProcessPoolExecutor(3, mp_context=SPAWN) as pool:
        runs = [
            pool.submit(hold_slots, str(tmp_path / "rl"), limits, 2, 0.4, str(log))
            for _ in range(3)
        ]
        for run in runs:
            run.result(timeout=90)
    intervals = [tuple(json.loads(line)) for line in log.read_text().splitlines()]
    assert len(intervals) == 6
    assert most_at_once(intervals) == 2  # the cap, and reached: the test could fail both ways


def test_starts_per_minute_are_shared_by_limiters_on_one_directory(tmp_path: Path) -> None:
    now = [1000.0]
    waited: list[float] = []

    def sleep(seconds: float) -> None:
        waited.append(seconds)
        now[0] += seconds

    limits = RateLimits(per_minute=3)
    first, second = (
        CallLimiter(tmp_path, limits, clock=lambda: now[0], sleep=sleep) for _ in range(2)
    )
    for limiter in (first, second, first):  # starts at t = 1000, 1010, 1020
        with limiter.slot():
            now[0] += 10.0
    assert waited == [] and second.starts_in_window() == 3
    with second.slot():  # the 4th start (t = 1030) waits for the 1st to leave the window
        pass
    assert sum(waited) == pytest.approx(30.0)
    assert first.starts_in_window() == 3  # 1010, 1020 and 1060


def test_a_call_that_waits_too_long_is_an_agent_error(tmp_path: Path) -> None:
    limiter = CallLimiter(tmp_path, RateLimits(max_concurrent=1), max_wait_s=0.3)
    with limiter.slot(), pytest.raises(RateLimitTimeout) as caught, limiter.slot():
        pass
    assert isinstance(caught.value, AgentError) and "1 concurrent" in str(caught.value)


def test_limits_must_be_whole_and_positive() -> None:
    for bad in ({"max_concurrent": 0}, {"per_minute": -1}, {"per_minute": 1.5}):
        with pytest.raises(ValueError):
            RateLimits(**bad)
    assert not RateLimits().active and RateLimits(per_minute=5).describe() == "5/min"


@pytest.mark.timeout(120)
def test_agents_in_two_processes_share_one_slot_at_the_endpoint(tmp_path: Path) -> None:
    """Two worker processes, one slot: the slow endpoint sees their requests one at a time;
    without the limit (the control) it sees them together."""
    delay = 0.8
    for directory, serial in ((str(tmp_path / "rl"), True), (None, False)):
        with FakeOpenAIServer(default=FakeReply(text="ok", delay_s=delay)) as server:
            with ProcessPoolExecutor(2, mp_context=SPAWN) as pool:
                limits = RateLimits(max_concurrent=1)
                calls = [
                    pool.submit(ask_endpoint, server.base_url, directory, limits) for _ in range(2)
                ]
                assert [c.result(timeout=90) for c in calls] == ["ok", "ok"]
            first, second = sorted(r.timestamp for r in server.chat_requests)
        if serial:
            assert second - first >= delay * 0.95, (first, second)
        else:
            assert second - first < delay * 0.95, (first, second)
