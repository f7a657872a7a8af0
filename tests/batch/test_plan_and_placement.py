"""The pieces a batch is made of: its saved plan, where each local worker runs, and the agent
recipe that travels to workers."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from engine.agents.openai_agent import OpenAIAgent
from engine.agents.rate_limit import CallLimiter, RateLimits
from engine.agents.settings import AgentSettings
from engine.batch.agent_spec import AgentSpec
from engine.batch.placement import PlacementError, plan_slots
from engine.batch.plan import PLAN_FILE, BatchPlan, BatchPlanError
from engine.search import SearchConfig


def test_cpu_workers_get_disjoint_core_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1, 2, 3, 4, 5, 6, 7})
    slots = plan_slots(3, "cpu")
    assert [s.cpus for s in slots] == [(0, 1, 2), (3, 4, 5), (6, 7)]
    assert all(s.gpu is None for s in slots)
    with pytest.raises(PlacementError, match="a core of its own"):
        plan_slots(9, "cpu")


def test_gpu_workers_get_one_gpu_each_round_robin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert [s.gpu for s in plan_slots(3, "auto")] == ["2", "5", "2"]
    assert all(s.cpus is None for s in plan_slots(2, "cuda"))
    assert all(s.gpu is None for s in plan_slots(2, "cpu"))  # --device cpu ignores GPUs
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(PlacementError, match="no GPU"):
        plan_slots(2, "cuda")


def test_a_plan_round_trips_through_batch_json(tmp_path: Path) -> None:
    refs = [tmp_path / "a" / "relu.py", tmp_path / "b" / "relu.py"]
    plan = BatchPlan.create(
        tmp_path / "runs",
        refs,
        config=SearchConfig(rounds=3, seed=7),
        agent_kind="offline",
        agent_public={"offline_seed": 7},
        agent_fallback=None,
        device="cpu",
        timeout_s=30.0,
        seed=7,
    )
    assert [t.name for t in plan.tasks] == ["000_relu", "001_relu-2"]
    loaded = BatchPlan.load(plan.run_dir)
    assert loaded == plan
    (plan.run_dir / PLAN_FILE).write_text(json.dumps({"schema": 99}))
    with pytest.raises(BatchPlanError, match="unknown schema"):
        BatchPlan.load(plan.run_dir)
    with pytest.raises(BatchPlanError, match="not a batch run directory"):
        BatchPlan.load(tmp_path)


def test_the_agent_recipe_travels_and_brings_the_shared_limiter(tmp_path: Path) -> None:
    settings = AgentSettings.from_env(base_url="http://127.0.0.1:9/v1", api_key="sk-x", env={})
    spec = AgentSpec(
        kind="openai",
        seed=1,
        settings=settings,
        limits=RateLimits(max_concurrent=4, per_minute=60),
        limiter_dir=str(tmp_path / ".rate_limit"),
    )
    setup = pickle.loads(pickle.dumps(spec)).build()  # as a worker process receives it
    assert isinstance(setup.agent, OpenAIAgent) and setup.kind == "openai"
    assert isinstance(setup.agent.limiter, CallLimiter)
    assert setup.agent.limiter.limits == RateLimits(4, 60) and "sk-x" in setup.secrets
    offline = AgentSpec(kind="offline", seed=1, fallback="no endpoint").build()
    assert offline.kind == "offline" and offline.fallback == "no endpoint"
