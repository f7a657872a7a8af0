"""Agent calls of a search: ask, record, parse, and repair a malformed reply once.

Every call leaves the same marks whatever its outcome: its prompt and reply in
evaluation/llm_io, a usage.csv row, a trace record and the llm_call_started/finished
events. A reply that does not parse gets exactly one repair request (`repair_request`);
the Check* trace records say what the search concluded about each reply, under the trace
step of that reply's call (calls of a parallel search's expansions interleave).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from engine.agents import prompts
from engine.agents.base import Agent, AgentError, AgentReply, AgentRequest, Role
from engine.artifacts.events import Event, LLMCallFinished, LLMCallStarted
from engine.artifacts.taskdir import TaskDir, UsageRow
from engine.bench import static_checks
from engine.search.config import Cancelled
from engine.search.parsing import (
    CodeReply,
    ParseError,
    PlanReply,
    parse_code_reply,
    parse_plan_reply,
)
from engine.search.trace_guard import SafeTrace
from engine.trace import ActionType

Parsed = TypeVar("Parsed", PlanReply, CodeReply)


@dataclass(slots=True)
class Parsing(Generic[Parsed]):
    """A reply's parse: the parsed value (None: malformed even after the repair, `error`
    says why), the reply parsed last and the trace step of its call."""

    parsed: Parsed | None
    reply: AgentReply
    step: int
    error: str = ""


def repair_request(request: AgentRequest, reply_text: str, error: ParseError) -> AgentRequest:
    """The one retry after a malformed reply: same structured fields (so an agent knows which
    role it repairs), a prompt that quotes the parse error, the original request and reply."""
    return replace(
        request,
        role=Role.REPAIR,
        prompt=prompts.build_repair_prompt(
            request.prompt, reply_text, str(error), plan=request.role is Role.PLAN
        ),
        previous_reply=reply_text,
        parse_error=str(error),
    )


class AgentCalls:
    """The search's agent calls for one task; each names the node it works for, which the
    trace records. Safe to use from several threads: every mark it leaves is written by a
    writer that serialises itself. Once `stop` is set, a new call raises `Cancelled`."""

    def __init__(
        self,
        agent: Agent,
        task: TaskDir,
        trace: SafeTrace,
        emit: Callable[[Event], None],
        stop: threading.Event | None = None,
    ) -> None:
        self.agent = agent
        self.task = task
        self.trace = trace
        self.emit = emit
        self.stop = stop or threading.Event()

    @property
    def model_label(self) -> str:
        models = dict.fromkeys(self.agent.model_for(r) for r in (Role.PLAN, Role.CODE, Role.DEBUG))
        return ",".join(models)

    def call(
        self, request: AgentRequest, round_: int, role_label: str, action: str, *, node_id: int
    ) -> tuple[AgentReply, int]:
        """One agent call with its events, llm_io files, usage row and trace record; the
        reply and the trace step it was recorded under."""
        if self.stop.is_set():
            raise Cancelled(f"round {round_}: the search stopped")
        model = self.agent.model_for(request.role)
        self.emit(
            LLMCallStarted(
                task_id=self.task.task_id, round=round_, role=str(request.role), model=model
            )
        )
        start = time.monotonic()
        try:
            reply = self.agent.complete(request)
        except AgentError as exc:
            error = self.task.redact(str(exc))
            failed = AgentReply(
                text=f"(no reply: {error})",
                model=model,
                latency_s=time.monotonic() - start,
                kind=getattr(self.agent, "reply_kind", "llm"),
            )
            self._record(request, round_, role_label, action, failed, error, node_id)
            self.task.log(f"round {round_}: {role_label} call failed: {error}")
            raise
        if not reply.latency_s:
            reply.latency_s = time.monotonic() - start
        reply.model = reply.model or model
        step = self._record(request, round_, role_label, action, reply, None, node_id)
        return reply, step

    def _record(
        self,
        request: AgentRequest,
        round_: int,
        role_label: str,
        action: str,
        reply: AgentReply,
        error: str | None,
        node_id: int,
    ) -> int:
        """llm_io files, usage row, trace record and the finished event for one call; the
        trace step."""
        self.task.write_llm_io(round_, role_label, request.prompt, reply.text, reply.reasoning)
        self.task.append_usage(
            UsageRow(
                round_,
                role_label,
                reply.model,
                reply.prompt_tokens,
                reply.completion_tokens,
                reply.latency_s,
                reply.cost_usd,
                error is None,
                error,
                reply.kind,
            )
        )
        step = self.trace.insert_designer_or_coder_record(
            reply.text if error is None else f"(the call failed: {error})",
            request.prompt,
            reply.reasoning,
            ActionType[action],
            round=round_,
            node_id=node_id,
        )
        self.emit(
            LLMCallFinished(
                task_id=self.task.task_id,
                round=round_,
                role=str(request.role),
                model=reply.model,
                ok=error is None,
                latency_s=reply.latency_s,
                prompt_tokens=reply.prompt_tokens,
                completion_tokens=reply.completion_tokens,
                error=error,
                call_kind=reply.kind,
            )
        )
        return step

    def ask_plan(
        self, request: AgentRequest, round_: int, parent_code: str, *, node_id: int
    ) -> tuple[PlanReply | None, str]:
        """The plan, or None and why (malformed even after the one repair)."""
        reply, step = self.call(request, round_, "plan", "DO_DESIGNER", node_id=node_id)
        answer = self._parse_with_repair(
            request,
            reply,
            step,
            round_,
            node_id,
            parse=lambda text: parse_plan_reply(text, parent_code),
            check_kind="CheckDesigner",
            label="plan",
            repair_action="FIX_DESIGNER",
        )
        plan = answer.parsed
        if plan is None:
            return None, answer.error
        self.check(
            "CheckDesigner",
            answer.reply.text,
            round_,
            ok=True,
            node_id=node_id,
            step=answer.step,
            warnings=plan.warnings,
            title=plan.plan["title"],
        )
        return plan, ""

    def ask_code(
        self, request: AgentRequest, round_: int, role_label: str, *, node_id: int
    ) -> tuple[CodeReply | None, str, int]:
        """The kernel, or None and why (a refusal, or malformed even after the repair); and
        the trace step of the reply it came from."""
        action = "FIX_CODER" if request.role is Role.DEBUG else "DO_CODER"
        reply, step = self.call(request, round_, role_label, action, node_id=node_id)
        if reply.refusal:  # the agent declined (e.g. nothing it knows fixes this failure)
            self.check(
                "CheckCoder",
                reply.text,
                round_,
                ok=False,
                node_id=node_id,
                step=step,
                refusal=reply.refusal,
            )
            return None, f"{role_label} agent could not fix: {reply.refusal}", step
        answer = self._parse_with_repair(
            request,
            reply,
            step,
            round_,
            node_id,
            parse=parse_code_reply,
            check_kind="CheckCoder",
            label=role_label,
            repair_action="FIX_CODER",
        )
        code = answer.parsed
        if code is None:
            return None, answer.error, answer.step
        self.check(
            "CheckCoder",
            answer.reply.text,
            round_,
            ok=True,
            node_id=node_id,
            step=answer.step,
            warnings=code.warnings,
            static_flags=static_checks.scan(code.code),
        )
        return code, "", answer.step

    def _parse_with_repair(
        self,
        request: AgentRequest,
        reply: AgentReply,
        step: int,
        round_: int,
        node_id: int,
        *,
        parse: Callable[[str], Parsed],
        check_kind: str,
        label: str,
        repair_action: str,
    ) -> Parsing[Parsed]:
        """Parse the reply; when malformed, ask once for a repair (`repair_request`) and parse
        that."""
        try:
            return Parsing(parse(reply.text), reply, step)
        except ParseError as exc:
            self.check(
                check_kind,
                reply.text,
                round_,
                ok=False,
                node_id=node_id,
                step=step,
                error=str(exc),
                repair=True,
            )
            repair = repair_request(request, reply.text, exc)
            reply, step = self.call(
                repair, round_, f"{label}_repair", repair_action, node_id=node_id
            )
        try:
            return Parsing(parse(reply.text), reply, step)
        except ParseError as exc:
            self.check(
                check_kind, reply.text, round_, ok=False, node_id=node_id, step=step, error=str(exc)
            )
            error = f"malformed {label} reply after one repair attempt: {exc}"
            return Parsing(None, reply, step, error)

    def check(
        self,
        kind: str,
        reply_text: str,
        round_: int,
        *,
        ok: bool,
        node_id: int,
        step: int,
        **facts: Any,
    ) -> None:
        """A CheckDesigner/CheckCoder record: what the search concluded about a reply, under
        the trace step of the call that brought it."""
        verdict = {"ok": ok, **facts}
        self.trace.insert_conductor_record(
            kind,
            reply_text,
            json.dumps(verdict, indent=2),
            node_id=node_id,
            round=round_,
            step=step,
        )
