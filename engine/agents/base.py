"""What every agent (OpenAI-compatible or offline) takes and returns.

The search builds an `AgentRequest` for each role. Endpoint agents send
`request.prompt` (the complete prompt text) to a model; the offline agent reads the
structured fields instead. Both answer with an `AgentReply` whose text has the same
shape (a fenced ```json plan and/or a fenced ```python kernel), so one parser
serves both and the offline path exercises it too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol

# Who answered: a real model ("llm", tokens and cost from the endpoint) or the embedded
# offline agent ("agent", no tokens and no cost: it counts nothing it did not spend).
ReplyKind = Literal["llm", "agent"]
REPLY_KINDS: tuple[ReplyKind, ...] = ("llm", "agent")


class Role(StrEnum):
    SEED = "seed"
    PLAN = "plan"
    CODE = "code"
    DEBUG = "debug"
    REPAIR = "repair"  # one retry after a malformed reply


@dataclass(slots=True)
class HistoryItem:
    """A neighbour or leader node, as context for an agent."""

    node_id: int
    phase: str
    runnable: bool
    speedup: float | None
    plan_summary: str = ""
    error: str | None = None
    code: str | None = None


@dataclass(slots=True)
class AgentRequest:
    role: Role
    prompt: str
    round: int
    reference_src: str
    device: str = "cpu"
    parent_code: str | None = None
    parent_plan: dict[str, Any] | None = None
    anchored_code: str | None = None
    plan: dict[str, Any] | None = None
    error_log: str | None = None
    history: list[HistoryItem] = field(default_factory=list)
    profile: list[dict[str, Any]] | None = None
    previous_reply: str | None = None  # for REPAIR: the malformed reply
    parse_error: str | None = None  # for REPAIR: what was wrong with it


@dataclass(slots=True)
class AgentReply:
    """One answer. `kind` says who wrote it ("llm" or the offline "agent"); the offline
    agent leaves the token counts None and `cost_usd` 0.0 rather than inventing numbers.

    `refusal` is set (and `text` holds no code) when a debug agent declines to fix a kernel,
    with the reason; the search records "debug agent could not fix: <refusal>" instead of
    benchmarking anything.
    """

    text: str
    reasoning: str = ""
    model: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float = 0.0
    cost_usd: float | None = None
    kind: ReplyKind = "llm"
    refusal: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in REPLY_KINDS:
            raise ValueError(f"unknown reply kind {self.kind!r}: expected one of {REPLY_KINDS}")


class AgentError(RuntimeError):
    """A call that failed after its retries; the expansion fails, not the run."""


class Agent(Protocol):
    name: str
    reply_kind: ReplyKind  # what its replies' `kind` is, also for calls that failed

    def model_for(self, role: Role) -> str: ...

    def complete(self, request: AgentRequest) -> AgentReply: ...


def repaired_role(request: AgentRequest) -> Role:
    """The role whose malformed reply a REPAIR request fixes, from the fields the search
    fills for each role: debug has an error log, code has a plan, plan has a parent."""
    if request.role is not Role.REPAIR:
        return Role(request.role)
    if request.error_log:
        return Role.DEBUG
    if request.plan is not None:
        return Role.CODE
    if request.parent_code is not None:
        return Role.PLAN
    return Role.SEED
