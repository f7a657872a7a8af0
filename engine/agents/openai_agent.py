"""An agent that sends prompts to any OpenAI-compatible chat endpoint through `openai`.

Works with OpenAI, vLLM, Ollama (`/v1`), llama.cpp server and similar. The client's own
retries are off (`max_retries=0`): this module retries itself so that backoff, jitter, the
Retry-After cap and the one-line failure message are under our control. Nothing here ever
formats the API key; error text that comes back from an endpoint is scrubbed of it too.
"""

from __future__ import annotations

import contextlib
import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import openai

from engine.agents.base import AgentError, AgentReply, AgentRequest, ReplyKind, Role, repaired_role
from engine.agents.settings import AgentSettings, RoleSettings, redact_url

if TYPE_CHECKING:
    from engine.agents.rate_limit import CallLimiter

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
NO_KEY_PLACEHOLDER = "no-key"  # local servers ignore the key, but the client wants one
PREFLIGHT_TIMEOUT_S = 20.0
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
# Optional request fields that some endpoints reject; on a 400 that names one, adapt once.
OPTIONAL_PARAMS = ("stream_options", "max_tokens", "temperature")
# Dropped-parameter marker: the endpoint's context is too small for our max_tokens (vLLM
# rejects prompt + max_tokens > max_model_len); send no limit and let the server cap it.
NO_TOKEN_LIMIT = "token_limit"


@dataclass(slots=True)
class _Completion:
    text: str
    reasoning: str
    model: str
    prompt_tokens: int | None
    completion_tokens: int | None


class _Retryable(Exception):
    """A failure worth another attempt; `wait_s` is the endpoint's Retry-After, if any."""

    def __init__(self, summary: str, wait_s: float | None = None) -> None:
        super().__init__(summary)
        self.summary = summary
        self.wait_s = wait_s


class _Fatal(Exception):
    """A failure that retrying cannot fix (bad key, unknown model, bad request)."""

    def __init__(self, summary: str) -> None:
        super().__init__(summary)
        self.summary = summary


class OpenAIAgent:
    """Plays every role by sending `request.prompt` to the role's model."""

    name = "openai"
    reply_kind: ReplyKind = "llm"

    def __init__(
        self,
        settings: AgentSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        limiter: CallLimiter | None = None,
    ) -> None:
        self.settings = settings
        # Shared with the run's other workers: each request waits for a slot (rate_limit.py).
        self.limiter = limiter
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._clients: dict[str, openai.OpenAI] = {}
        self._dropped_params: dict[str, set[str]] = {}  # base URL -> params it rejected

    # --- Agent protocol ----------------------------------------------------------------------

    def model_for(self, role: Role) -> str:
        return self.settings.for_role(role).model

    def role_settings(self, request: AgentRequest) -> RoleSettings:
        """A repair borrows the settings of the role whose reply it repairs."""
        return self.settings.for_role(repaired_role(request))

    def complete(self, request: AgentRequest) -> AgentReply:
        role = self.role_settings(request)
        messages = [{"role": "user", "content": request.prompt}]
        completion, latency = self._call_with_retries(
            role, messages, self.settings.max_tokens, label=str(request.role)
        )
        return AgentReply(
            text=completion.text,
            reasoning=completion.reasoning,
            model=completion.model or role.model,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            latency_s=latency,
            cost_usd=self._cost(completion.model or role.model, completion),
            kind=self.reply_kind,
        )

    # --- preflight ---------------------------------------------------------------------------

    def preflight(self) -> list[str]:
        """Check each configured endpoint quickly; raise AgentError with one line if unusable.

        Lists the models (cheap, no tokens); where listing is unsupported, or the configured
        model is not listed, tries a 1-token completion instead. Returns notes for the user.
        """
        notes: list[str] = []
        checked: set[tuple[str, str]] = set()
        for role_name in ("plan", "code", "debug"):
            role = getattr(self.settings, role_name)
            url = self._base_url(role)
            if (url, role.model) in checked:
                continue
            checked.add((url, role.model))
            client = self._client(role).with_options(
                timeout=min(self.settings.timeout_s, PREFLIGHT_TIMEOUT_S), max_retries=0
            )
            listed: list[str] | None
            try:
                listed = [m.id for m in client.models.list()]
            except openai.APIStatusError as exc:
                if exc.status_code in (401, 403):
                    raise AgentError(self._failure(role, "preflight", _summary(exc), 1)) from None
                if exc.status_code == 429:  # reachable and the key works: just busy
                    notes.append(f"{redact_url(url)} is rate-limiting; continuing")
                    continue
                listed = None  # listing unsupported here: fall back to a completion
            except openai.APIConnectionError as exc:  # includes timeouts
                raise AgentError(self._failure(role, "preflight", _summary(exc), 1)) from None
            except Exception:  # noqa: BLE001 - a non-OpenAI listing format: try a completion
                listed = None
            if listed is not None and role.model in listed:
                continue
            try:
                messages = [{"role": "user", "content": "Reply with OK."}]
                self._attempt(client, role, messages, max_tokens=1, stream=False)
            except _Retryable as exc:
                if "HTTP 429" in exc.summary:
                    notes.append(f"{redact_url(url)} is rate-limiting; continuing")
                    continue
                raise AgentError(self._failure(role, "preflight", exc.summary, 1)) from None
            except _Fatal as exc:
                raise AgentError(self._failure(role, "preflight", exc.summary, 1)) from None
            if listed is not None:
                notes.append(f"model {role.model!r} is not listed by {redact_url(url)}")
        return notes

    # --- internals ---------------------------------------------------------------------------

    def _base_url(self, role: RoleSettings) -> str:
        return role.base_url or OPENAI_DEFAULT_BASE_URL

    def _client(self, role: RoleSettings) -> openai.OpenAI:
        url = self._base_url(role)
        client = self._clients.get(url)
        if client is None:
            key = self.settings.api_key
            if not key:
                if role.base_url is None:
                    raise AgentError(
                        "no API key for the OpenAI endpoint: set OPENAI_API_KEY or "
                        "STARK_API_KEY, or a base URL for a local server (STARK_BASE_URL)"
                    )
                key = NO_KEY_PLACEHOLDER
            client = openai.OpenAI(
                api_key=key, base_url=url, timeout=self.settings.timeout_s, max_retries=0
            )
            self._clients[url] = client
        return client

    def _call_with_retries(
        self, role: RoleSettings, messages: list[dict[str, str]], max_tokens: int | None, label: str
    ) -> tuple[_Completion, float]:
        client = self._client(role)
        attempts = 1 + self.settings.max_retries
        last = "no attempt made"
        for attempt in range(attempts):
            slot = self.limiter.slot() if self.limiter else contextlib.nullcontext()
            try:
                with slot:
                    started = time.perf_counter()
                    completion = self._attempt(
                        client, role, messages, max_tokens=max_tokens, stream=self.settings.stream
                    )
                return completion, time.perf_counter() - started
            except _Fatal as exc:
                raise AgentError(self._failure(role, label, exc.summary, attempt + 1)) from None
            except _Retryable as exc:
                last = exc.summary
                if attempt + 1 < attempts:
                    self._sleep(self._backoff(attempt, exc.wait_s))
        raise AgentError(self._failure(role, label, last, attempts))

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter; an endpoint's Retry-After wins, within the cap."""
        cap = self.settings.backoff_max_s
        if retry_after is not None:
            return max(0.0, min(cap, retry_after))
        ceiling = min(cap, self.settings.backoff_base_s * (2**attempt))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def _attempt(
        self,
        client: openai.OpenAI,
        role: RoleSettings,
        messages: list[dict[str, str]],
        *,
        max_tokens: int | None,
        stream: bool,
    ) -> _Completion:
        """One request (adapting once per rejected optional parameter); classify failures."""
        url = self._base_url(role)
        dropped = self._dropped_params.setdefault(url, set())
        for _ in range(len(OPTIONAL_PARAMS) + 2):
            params: dict[str, Any] = {"model": role.model, "messages": messages}
            if "temperature" not in dropped:
                params["temperature"] = role.temperature
            if max_tokens is not None and NO_TOKEN_LIMIT not in dropped:
                key = "max_completion_tokens" if "max_tokens" in dropped else "max_tokens"
                params[key] = max_tokens
            if stream:
                params["stream"] = True
                if "stream_options" not in dropped:
                    params["stream_options"] = {"include_usage": True}
            try:
                if stream:
                    return _read_stream(client.chat.completions.create(**params), role.model)
                return _read_message(client.chat.completions.create(**params), role.model)
            except openai.BadRequestError as exc:
                rejected = _rejected_param(exc, params, dropped)
                if rejected is None:
                    raise _Fatal(self._scrub(_summary(exc))) from None
                dropped.add(rejected)
            except openai.APIStatusError as exc:
                summary = self._scrub(_summary(exc))
                if exc.status_code in RETRYABLE_STATUS:
                    raise _Retryable(summary, _retry_after(exc.response.headers)) from None
                raise _Fatal(summary) from None
            except openai.APIError as exc:  # connection errors and timeouts
                raise _Retryable(self._scrub(_summary(exc))) from None
            except Exception as exc:
                if type(exc).__module__.split(".")[0].startswith("httpx"):
                    raise _Retryable(self._scrub(f"{type(exc).__name__}: {exc}")) from None
                raise
        raise _Fatal("the endpoint rejected every optional request parameter")

    def _scrub(self, text: str) -> str:
        """One line, bounded, and without the key even if an endpoint echoes it."""
        key = self.settings.api_key
        if key:
            text = text.replace(key, "<redacted>")
        text = " ".join(text.split())
        return text if len(text) <= 300 else text[:297] + "..."

    def _failure(self, role: RoleSettings, label: str, summary: str, attempts: int) -> str:
        where = redact_url(self._base_url(role))
        tries = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
        return self._scrub(f"{label} call to {role.model} at {where} failed {tries}: {summary}")

    def _cost(self, model: str, completion: _Completion) -> float | None:
        price = self.settings.price_for(model) or self.settings.price_for(model.split("/")[-1])
        if price is None or completion.prompt_tokens is None:
            return None
        output = completion.completion_tokens or 0
        return (completion.prompt_tokens * price[0] + output * price[1]) / 1_000_000


# --- response reading ---------------------------------------------------------------------


def _reasoning_of(obj: Any) -> str:
    """vLLM/DeepSeek send `reasoning_content`; others (OpenRouter, Ollama) send `reasoning`."""
    extra = getattr(obj, "model_extra", None) or {}
    for name in ("reasoning_content", "reasoning"):
        value = extra.get(name, getattr(obj, name, None))
        if isinstance(value, str) and value:
            return value
    return ""


def _read_message(response: Any, requested_model: str) -> _Completion:
    if not getattr(response, "choices", None):
        raise _Retryable("the endpoint answered without choices")
    message = response.choices[0].message
    usage = getattr(response, "usage", None)
    return _Completion(
        text=message.content or "",
        reasoning=_reasoning_of(message),
        model=getattr(response, "model", None) or requested_model,
        prompt_tokens=getattr(usage, "prompt_tokens", None),
        completion_tokens=getattr(usage, "completion_tokens", None),
    )


def _read_stream(stream: Any, requested_model: str) -> _Completion:
    text: list[str] = []
    reasoning: list[str] = []
    model = ""
    usage = None
    with stream:
        for chunk in stream:
            model = model or getattr(chunk, "model", "") or ""
            if getattr(chunk, "usage", None) is not None:
                usage = chunk.usage
            for choice in chunk.choices or []:
                delta = choice.delta
                if delta is None:
                    continue
                if delta.content:
                    text.append(delta.content)
                piece = _reasoning_of(delta)
                if piece:
                    reasoning.append(piece)
    return _Completion(
        text="".join(text),
        reasoning="".join(reasoning),
        model=model or requested_model,
        prompt_tokens=getattr(usage, "prompt_tokens", None),
        completion_tokens=getattr(usage, "completion_tokens", None),
    )


# --- error helpers ------------------------------------------------------------------------


def _summary(exc: Exception) -> str:
    if isinstance(exc, openai.APIStatusError):
        message = ""
        body = exc.body
        if isinstance(body, dict):
            error = body.get("error", body)
            message = str(error.get("message", "")) if isinstance(error, dict) else str(error)
        return f"HTTP {exc.status_code}: {message or exc.message}"
    if isinstance(exc, openai.APITimeoutError):
        return "request timed out"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        detail = f" ({type(cause).__name__}: {cause})" if cause else ""
        return f"cannot connect{detail}"
    return f"{type(exc).__name__}: {exc}"


def _rejected_param(
    exc: openai.BadRequestError, params: dict[str, Any], dropped: set[str]
) -> str | None:
    """The optional parameter a 400 complains about, if it is one we can do without."""
    text = _summary(exc).lower()
    limited = "max_tokens" in params or "max_completion_tokens" in params
    if limited and NO_TOKEN_LIMIT not in dropped and "context length" in text:
        return NO_TOKEN_LIMIT
    for name in OPTIONAL_PARAMS:
        if name in dropped or name not in params:
            continue
        if name in text and ("unsupported" in text or "not support" in text or "unknown" in text):
            return name
    return None


def _retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return float(value) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        return max(0.0, parsed.timestamp() - time.time())
