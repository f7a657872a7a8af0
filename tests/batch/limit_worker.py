"""What the rate-limit tests run in child processes (spawned, so importable by name): calls
through a CallLimiter on a shared directory, as the workers of one batch make them."""

from __future__ import annotations

import json
import time
from pathlib import Path

from engine.agents.rate_limit import CallLimiter, RateLimits


def hold_slots(directory: str, limits: RateLimits, calls: int, hold_s: float, log: str) -> None:
    """`calls` times: take a slot, hold it `hold_s`, and append [start, end] to `log`."""
    limiter = CallLimiter(Path(directory), limits)
    for _ in range(calls):
        with limiter.slot():
            start = time.time()
            time.sleep(hold_s)
            end = time.time()
        with open(log, "a") as fh:
            fh.write(json.dumps([start, end]) + "\n")


def ask_endpoint(base_url: str, directory: str | None, limits: RateLimits) -> str:
    """One plan call through the real OpenAI agent, limited when `directory` is given."""
    from engine.agents.base import AgentRequest, Role
    from engine.agents.openai_agent import OpenAIAgent
    from engine.agents.settings import AgentSettings

    settings = AgentSettings.from_env(base_url=base_url, env={}, search_dir=directory or ".")
    limiter = CallLimiter(Path(directory), limits) if directory else None
    agent = OpenAIAgent(settings, limiter=limiter)
    request = AgentRequest(role=Role.PLAN, prompt="plan", round=1, reference_src="")
    return agent.complete(request).text
