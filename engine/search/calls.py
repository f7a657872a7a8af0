"""Agent calls of a search: ask, record, parse, and repair a malformed reply once.

Every call leaves the same marks whatever its outcome: its prompt and reply in
evaluation/llm_io, a usage.csv row, a trace record and the llm_call_started/finished
events. A reply that does not parse gets exactly one repair request (`repair_request`);
the Check* trace records say what the search concluded about each reply.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from engine.agents import prompts
from engine.agents.base import Agent, AgentError, AgentReply, AgentRequest, Role
from engine.artifacts.events import Event, LLMCallFinished, LLMCallStarted
from engine.artifacts.taskdir import TaskDir, UsageRow
from engine.bench import static_checks
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
    """The search's agent calls for one task. `next_node_id` names the node a call works
    for (the tree's next id), which the trace records."""

    def __init__(
        self,
        agent: Agent,
        task: TaskDir,
        trace: SafeTrace,
        emit: Callable[[Event], None],
        next_node_id: Callable[[], int],
    ) -> None:
        self.agent = agent
        self.task = task
        self.trace = trace
        self.emit = emit
        self.next_node_id = next_node_id

    @property
    def model_label(self) -> str:
        models = dict.fromkeys(self.agent.model_for(r) for r in (Role.PLAN, Role.CODE, Role.DEBUG))
        return ",".join(models)

    def call(self, request: AgentRequest, round_: int, role_label: str, action: str) -> AgentReply:
        """One agent call with its events, llm_io files, usage row and trace record."""
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
            self._record(request, round_, role_label, action, failed, error)
            self.task.log(f"round {round_}: {role_label} call failed: {error}")
            raise
        if not reply.latency_s:
            reply.latency_s = time.monotonic() - start
        reply.model = reply.model or model
        self._record(request, round_, role_label, action, reply, None)
        return reply

    def _record(
        self,
        request: AgentRequest,
        round_: int,
        role_label: str,
        action: str,
        reply: AgentReply,
        error: str | None,
    ) -> None:
        """llm_io files, usage row, trace record and the finished event for one call."""
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
        self.trace.insert_designer_or_coder_record(
            reply.text if error is None else f"(the call failed: {error})",
            request.prompt,
            reply.reasoning,
            ActionType[action],
            round=round_,
            node_id=self.next_node_id(),
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

    def ask_plan(
        self, request: AgentRequest, round_: int, parent_code: str
    ) -> tuple[PlanReply | None, str]:
        """The plan, or None and why (malformed even after the one repair)."""
        reply = self.call(request, round_, "plan", "DO_DESIGNER")
        plan, reply, error = self._parse_with_repair(
            request,
            reply,
            round_,
            parse=lambda text: parse_plan_reply(text, parent_code),
            check_kind="CheckDesigner",
            label="plan",
            repair_action="FIX_DESIGNER",
        )
        if plan is None:
            return None, error
        self.check(
            "CheckDesigner",
            reply.text,
            round_,
            ok=True,
            warnings=plan.warnings,
            title=plan.plan["title"],
        )
        return plan, ""

    def ask_code(
        self, request: AgentRequest, round_: int, role_label: str
    ) -> tuple[CodeReply | None, str]:
        """The kernel, or None and why (a refusal, or malformed even after the repair)."""
        action = "FIX_CODER" if request.role is Role.DEBUG else "DO_CODER"
        reply = self.call(request, round_, role_label, action)
        if reply.refusal:  # the agent declined (e.g. nothing it knows fixes this failure)
            self.check("CheckCoder", reply.text, round_, ok=False, refusal=reply.refusal)
            return None, f"{role_label} agent could not fix: {reply.refusal}"
        code, reply, error = self._parse_with_repair(
            request,
            reply,
            round_,
            parse=parse_code_reply,
            check_kind="CheckCoder",
            label=role_label,
            repair_action="FIX_CODER",
        )
        if code is None:
            return None, error
        self.check(
            "CheckCoder",
            reply.text,
            round_,
            ok=True,
            warnings=code.warnings,
            static_flags=static_checks.scan(code.code),
        )
        return code, ""

    def _parse_with_repair(
        self,
        request: AgentRequest,
        reply: AgentReply,
        round_: int,
        *,
        parse: Callable[[str], Parsed],
        check_kind: str,
        label: str,
        repair_action: str,
    ) -> tuple[Parsed | None, AgentReply, str]:
        """Parse the reply; when malformed, ask once for a repair (`repair_request`) and parse
        that. Returns (parsed or None, the reply parsed last, why it is None)."""
        try:
            return parse(reply.text), reply, ""
        except ParseError as exc:
            self.check(check_kind, reply.text, round_, ok=False, error=str(exc), repair=True)
            repair = repair_request(request, reply.text, exc)
            reply = self.call(repair, round_, f"{label}_repair", repair_action)
        try:
            return parse(reply.text), reply, ""
        except ParseError as exc:
            self.check(check_kind, reply.text, round_, ok=False, error=str(exc))
            return None, reply, f"malformed {label} reply after one repair attempt: {exc}"

    def check(self, kind: str, reply_text: str, round_: int, *, ok: bool, **facts: Any) -> None:
        """A CheckDesigner/CheckCoder record: what the search concluded about a reply."""
        verdict = {"ok": ok, **facts}
        self.trace.insert_conductor_record(
            kind,
            reply_text,
            json.dumps(verdict, indent=2),
            node_id=self.next_node_id(),
            round=round_,
        )
