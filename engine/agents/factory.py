"""Pick the agent for a run: an endpoint when one is configured, else the offline default."""

from __future__ import annotations

from engine.agents.base import Agent
from engine.agents.settings import AgentSettings

AGENT_KINDS = ("auto", "offline", "openai")


def make_agent(kind: str, settings: AgentSettings | None = None, seed: int = 0) -> Agent:
    """`auto` uses the OpenAI-compatible endpoint when a key or base URL is configured and
    the embedded offline agent otherwise, so `stark optimize` works with no key and no network.
    """
    choice = (kind or "auto").strip().lower()
    if choice not in AGENT_KINDS:
        raise ValueError(f"unknown agent kind {kind!r}: expected one of {', '.join(AGENT_KINDS)}")
    if choice != "offline" and settings is None:
        settings = AgentSettings.from_env()
    if choice == "auto":
        choice = "openai" if settings is not None and settings.endpoint_configured else "offline"
    if choice == "openai":
        from engine.agents.openai_agent import OpenAIAgent

        assert settings is not None
        return OpenAIAgent(settings)
    from engine.agents.offline import OfflineAgent

    return OfflineAgent(seed)
