"""How a worker builds the batch's agent: a picklable recipe (kind, seed, resolved settings,
rate limits) instead of the agent object, so it travels to worker processes and Ray tasks.

The settings are resolved once, by the driver (flags, environment, stark.toml), and shipped
with the API key in memory (a pipe to a local worker, the task's arguments on Ray), so a
worker on another node needs neither the driver's environment nor its stark.toml.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.agents.factory import AgentSetup, agent_setup, choose_agent
from engine.agents.rate_limit import CallLimiter, RateLimits
from engine.agents.settings import AgentSettings


@dataclass(frozen=True, slots=True)
class AgentSpec:
    kind: str  # offline | openai (auto already resolved by the driver)
    seed: int
    settings: AgentSettings | None = None  # None for the offline agent
    fallback: str | None = None  # why --agent auto chose the offline agent
    limits: RateLimits = field(default_factory=RateLimits)
    limiter_dir: str | None = None  # shared by every worker of the run (run_dir/.rate_limit)

    def build(self) -> AgentSetup:
        """The agent for one worker, with the run's shared call limiter when limits are set."""
        settings = self.settings or AgentSettings.defaults()
        choice = choose_agent(self.kind, settings, self.seed)
        setup = agent_setup(choice, settings, self.seed)
        setup.fallback = self.fallback
        if self.limits.active and self.limiter_dir and hasattr(setup.agent, "limiter"):
            setup.agent.limiter = CallLimiter(Path(self.limiter_dir), self.limits)
        return setup
