"""Pick the agent for a run: an endpoint when one is configured, else the offline default.

`choose_agent` says *why* as well: when `auto` falls back to the offline agent,
`AgentChoice.fallback_reason` names the settings that would have selected a model, so the
CLI can print it and the summary can record it (`agent_fallback`) instead of a run quietly
reporting an offline search as if a model had planned it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from engine.agents.base import Agent
from engine.agents.settings import AgentSettings

AGENT_KINDS = ("auto", "offline", "openai")

NO_ENDPOINT_REASON = (
    "no model endpoint configured (set STARK_API_KEY or OPENAI_API_KEY, STARK_BASE_URL or "
    "OPENAI_BASE_URL, `base_url` in stark.toml, or pass --base-url); "
    "using the embedded offline agent"
)


@dataclass(frozen=True, slots=True)
class AgentChoice:
    """The agent a run uses, which kind it resolved to, and why `auto` fell back."""

    agent: Agent
    kind: str  # "offline" | "openai" (auto resolved)
    requested: str  # what was asked for: "auto" | "offline" | "openai"
    fallback_reason: str | None = None  # set only when `auto` fell back to offline


def choose_agent(kind: str, settings: AgentSettings | None = None, seed: int = 0) -> AgentChoice:
    """`auto` uses the OpenAI-compatible endpoint when a key or base URL is configured and
    the embedded offline agent otherwise, so `stark optimize` works with no key and no network.
    """
    requested = (kind or "auto").strip().lower()
    if requested not in AGENT_KINDS:
        raise ValueError(f"unknown agent kind {kind!r}: expected one of {', '.join(AGENT_KINDS)}")
    if requested != "offline" and settings is None:
        settings = AgentSettings.from_env()
    resolved, reason = requested, None
    if requested == "auto":
        if settings is not None and settings.endpoint_configured:
            resolved = "openai"
        else:
            resolved, reason = "offline", NO_ENDPOINT_REASON
    if resolved == "openai":
        from engine.agents.openai_agent import OpenAIAgent

        assert settings is not None
        return AgentChoice(OpenAIAgent(settings), "openai", requested)
    from engine.agents.offline import OfflineAgent

    return AgentChoice(OfflineAgent(seed), "offline", requested, reason)


def make_agent(kind: str, settings: AgentSettings | None = None, seed: int = 0) -> Agent:
    """The agent alone, for callers that do not report a fallback."""
    return choose_agent(kind, settings, seed).agent


@dataclass(slots=True)
class AgentSetup:
    """A resolved agent with what a run records about it."""

    agent: Any
    kind: str  # offline | openai (after resolving auto)
    public: dict[str, Any]  # settings without the key, for tree.json
    secrets: list[str | None]  # values the task directory and events must never show
    fallback: str | None = None  # why --agent auto chose the offline agent


def agent_setup(choice: AgentChoice, settings: AgentSettings, seed: int) -> AgentSetup:
    """What a run keeps of a chosen agent: public settings for tree.json (no key), and the
    secrets to redact, including a password in a proxy URL (user:password@host)."""
    public = settings.to_public_dict() if choice.kind != "offline" else {"offline_seed": seed}
    secrets: list[str | None] = [settings.api_key]
    for role in (settings.plan, settings.code, settings.debug):
        if role.base_url:
            secrets.append(urlsplit(role.base_url).password)
    return AgentSetup(choice.agent, choice.kind, public, secrets, choice.fallback_reason)
