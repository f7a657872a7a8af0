"""The OpenAI-compatible agent against the scripted local server, through the real client."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.agents.base import AgentError, AgentRequest, Role
from engine.agents.openai_agent import OpenAIAgent
from engine.agents.settings import AgentSettings
from tests.fakes import FakeOpenAIServer, FakeReply

KEY = "sk-test-SECRET-0123456789"
Factory = Callable[..., FakeOpenAIServer]


def _settings(tmp_path: Path, base_url: str, **overrides: object) -> AgentSettings:
    env = {"STARK_API_KEY": KEY, "STARK_BASE_URL": base_url, "STARK_MODEL": "fake-model"}
    return AgentSettings.from_env(env=env, search_dir=tmp_path, **overrides)


def _agent(settings: AgentSettings, sleeps: list[float] | None = None) -> OpenAIAgent:
    record = sleeps if sleeps is not None else []
    return OpenAIAgent(settings, sleep=record.append)


def _request(role: Role = Role.CODE, prompt: str = "write ModelNew") -> AgentRequest:
    return AgentRequest(role=role, prompt=prompt, round=1, reference_src="")


@pytest.mark.parametrize(
    ("stream", "field"),
    [
        (False, "reasoning_content"),
        (True, "reasoning_content"),
        (False, "reasoning"),
        (True, "reasoning"),
    ],
)
def test_reply_reasoning_and_usage(
    tmp_path: Path, fake_openai: Factory, stream: bool, field: str
) -> None:
    text = "Here it is.\n```python\nclass ModelNew: ...\n```\n"
    reply = FakeReply(text=text, reasoning="think first", reasoning_field=field, prompt_tokens=11)
    server = fake_openai([reply])
    settings = _settings(tmp_path, server.base_url, stream=stream)
    reply = _agent(settings).complete(_request(Role.PLAN, "plan please"))
    assert reply.text == text
    assert reply.reasoning == "think first"
    assert reply.model == "fake-model"
    assert reply.prompt_tokens == 11 and reply.completion_tokens and reply.completion_tokens > 0
    assert reply.latency_s > 0
    assert reply.kind == "llm" and reply.refusal is None  # a real model's reply
    sent = server.chat_requests[0]
    assert sent.body is not None
    assert sent.body["temperature"] == 0.8  # plan role
    assert sent.body["messages"] == [{"role": "user", "content": "plan please"}]
    assert bool(sent.body.get("stream")) is stream
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    leaked = [k for k, v in sent.headers.items() if KEY in v and k != "authorization"]
    assert leaked == [] and KEY.encode() not in sent.raw_body


def test_roles_use_their_own_model_and_temperature(tmp_path: Path, fake_openai: Factory) -> None:
    server = fake_openai(["a", "b", "c"])
    settings = _settings(tmp_path, server.base_url, debug_model="debugger")
    agent = _agent(settings)
    for role in (Role.SEED, Role.DEBUG, Role.PLAN):
        agent.complete(_request(role))
    bodies = [r.body or {} for r in server.chat_requests]
    assert [(b["model"], b["temperature"]) for b in bodies] == [
        ("fake-model", 0.1),
        ("debugger", 0.1),
        ("fake-model", 0.8),
    ]
    assert agent.model_for(Role.DEBUG) == "debugger"


def test_cost_from_the_price_table(tmp_path: Path, fake_openai: Factory) -> None:
    server = fake_openai(
        [FakeReply("x", model="gpt-4o-mini", prompt_tokens=1000, completion_tokens=500)]
    )
    reply = _agent(_settings(tmp_path, server.base_url)).complete(_request())
    assert reply.cost_usd == pytest.approx((1000 * 0.15 + 500 * 0.60) / 1e6)
    server = fake_openai(["x"])
    assert _agent(_settings(tmp_path, server.base_url)).complete(_request()).cost_usd is None


@pytest.mark.parametrize("stream", [False, True])
def test_retries_on_429_and_503_then_succeeds(
    tmp_path: Path, fake_openai: Factory, stream: bool
) -> None:
    server = fake_openai(
        [FakeReply(status=429, retry_after=2), FakeReply(status=503), FakeReply(status=500), "ok"]
    )
    sleeps: list[float] = []
    agent = _agent(_settings(tmp_path, server.base_url, stream=stream), sleeps)
    assert agent.complete(_request()).text == "ok"
    assert len(server.chat_requests) == 4
    assert sleeps[0] == 2.0  # Retry-After honoured
    assert 0.5 <= sleeps[1] <= 2.0 and 1.0 <= sleeps[2] <= 4.0  # exponential with jitter


def test_a_stream_cut_midway_is_retried(tmp_path: Path, fake_openai: Factory) -> None:
    server = fake_openai([FakeReply("x" * 200, drop_stream_after=3), "complete"])
    agent = _agent(_settings(tmp_path, server.base_url, stream=True))
    assert agent.complete(_request()).text == "complete"
    assert len(server.chat_requests) == 2


def test_retry_after_is_capped(tmp_path: Path, fake_openai: Factory) -> None:
    server = fake_openai([FakeReply(status=429, retry_after=3600), "ok"])
    sleeps: list[float] = []
    _agent(_settings(tmp_path, server.base_url), sleeps).complete(_request())
    assert sleeps == [30.0]


def test_exhausted_retries_raise_one_line_without_the_key(
    tmp_path: Path, fake_openai: Factory
) -> None:
    echo = f"invalid upstream token {KEY}"
    server = fake_openai([FakeReply(status=503, error_message=echo)] * 3)
    agent = _agent(_settings(tmp_path, server.base_url, max_retries=2))
    with pytest.raises(AgentError) as caught:
        agent.complete(_request())
    message = str(caught.value)
    assert "after 3 attempts" in message and "HTTP 503" in message
    assert KEY not in message and "<redacted>" in message
    assert "\n" not in message
    assert len(server.chat_requests) == 3


def test_client_errors_are_not_retried(tmp_path: Path, fake_openai: Factory) -> None:
    server = fake_openai([FakeReply(status=401, error_message="bad key"), "never"])
    with pytest.raises(AgentError, match="after 1 attempt: HTTP 401: bad key"):
        _agent(_settings(tmp_path, server.base_url)).complete(_request())
    assert len(server.chat_requests) == 1


def test_timeouts_are_retried_then_reported(tmp_path: Path, fake_openai: Factory) -> None:
    server = fake_openai([FakeReply("late", delay_s=5), FakeReply("late", delay_s=5), "on time"])
    agent = _agent(_settings(tmp_path, server.base_url, timeout_s=0.3, max_retries=2))
    assert agent.complete(_request()).text == "on time"
    server = fake_openai([FakeReply("late", delay_s=5)] * 2)
    agent = _agent(_settings(tmp_path, server.base_url, timeout_s=0.3, max_retries=1))
    with pytest.raises(AgentError, match="after 2 attempts: request timed out"):
        agent.complete(_request())


def test_rejected_optional_parameter_is_dropped(tmp_path: Path, fake_openai: Factory) -> None:
    """Reasoning models reject max_tokens; the agent switches to max_completion_tokens."""
    message = "Unsupported parameter: 'max_tokens' is not supported with this model."
    server = fake_openai([FakeReply(status=400, error_message=message), "ok", "ok again"])
    agent = _agent(_settings(tmp_path, server.base_url))
    assert agent.complete(_request()).text == "ok"
    agent.complete(_request())
    bodies = [r.body or {} for r in server.chat_requests]
    assert "max_tokens" in bodies[0] and "max_completion_tokens" in bodies[1]
    assert "max_completion_tokens" in bodies[2]  # remembered for this endpoint


def test_context_too_small_for_max_tokens_sends_no_limit(
    tmp_path: Path, fake_openai: Factory
) -> None:
    message = (
        "This model's maximum context length is 4096 tokens. However, you requested 8300 "
        "tokens (108 in the messages, 8192 in the completion)."
    )
    server = fake_openai([FakeReply(status=400, error_message=message), "ok", message])
    agent = _agent(_settings(tmp_path, server.base_url))
    assert agent.complete(_request()).text == "ok"
    bodies = [r.body or {} for r in server.chat_requests]
    assert bodies[0]["max_tokens"] == 8192
    assert "max_tokens" not in bodies[1] and "max_completion_tokens" not in bodies[1]
    # a prompt that alone overflows the context is not retried forever
    server = fake_openai([FakeReply(status=400, error_message=message)] * 3)
    with pytest.raises(AgentError, match="context length"):
        _agent(_settings(tmp_path, server.base_url)).complete(_request())
    assert len(server.chat_requests) == 2


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_preflight(tmp_path: Path, fake_openai: Factory) -> None:
    server = fake_openai([])
    assert _agent(_settings(tmp_path, server.base_url)).preflight() == []
    assert [r.path for r in server.requests] == ["/v1/models"]

    # listing unsupported (llama.cpp-style 404): a 1-token completion decides instead
    server = fake_openai(["O"], models_status=404)
    assert _agent(_settings(tmp_path, server.base_url)).preflight() == []
    assert (server.chat_requests[0].body or {})["max_tokens"] == 1

    url = f"http://127.0.0.1:{_closed_port()}/v1"
    with pytest.raises(AgentError, match="cannot connect") as caught:
        _agent(_settings(tmp_path, url)).preflight()
    assert KEY not in str(caught.value) and "\n" not in str(caught.value)

    server = fake_openai([], models_status=401)
    with pytest.raises(AgentError, match="HTTP 401"):
        _agent(_settings(tmp_path, server.base_url)).preflight()

    # an unknown model on a server that lists its models: the completion decides
    server = fake_openai([FakeReply(status=404, error_message="model 'nope' not found")])
    settings = AgentSettings.from_env(
        env={"STARK_BASE_URL": server.base_url, "STARK_MODEL": "nope"}, search_dir=tmp_path
    )
    with pytest.raises(
        AgentError, match="preflight call to nope .* HTTP 404: model 'nope' not found"
    ):
        _agent(settings).preflight()

    # rate-limited is reachable: a note, not a failure
    server = fake_openai([], models_status=429)
    notes = _agent(_settings(tmp_path, server.base_url)).preflight()
    assert notes and "rate-limiting" in notes[0]


def test_no_key_for_the_public_endpoint_is_a_clear_error(tmp_path: Path) -> None:
    settings = AgentSettings.from_env(env={}, search_dir=tmp_path)
    with pytest.raises(AgentError, match="no API key"):
        OpenAIAgent(settings).complete(_request())


def test_local_server_without_key(tmp_path: Path, fake_openai: Factory) -> None:
    server = fake_openai(["fine"])
    settings = AgentSettings.from_env(env={"STARK_BASE_URL": server.base_url}, search_dir=tmp_path)
    assert settings.endpoint_configured
    assert OpenAIAgent(settings).complete(_request()).text == "fine"
