"""The STARK search loop: seed, then rounds of select -> plan/code or debug -> benchmark.

Round 0 asks for a seed kernel and makes it the root. Each round 1..R-1 selects one
node (`StarkTree.select_node`) and adds exactly one child:

- a runnable node gets a plan prompt (its profile, local history, leaders) and then a
  code prompt (anchored code + plan + neighbours' and leaders' context);
- a buggy node gets a debug prompt (error-log tail, siblings, leaders, plan hint).

Scoring: a node's score is its measured speedup over the reference if it compiled
and passed every correctness trial, else 0 (see `engine.tree.score_of`). A node whose
code is the reference (or equivalent, `engine.equivalence`) is a `baseline` node: it
may be expanded but is never the best kernel. The reference's forward time, measured by
the first evaluation, is handed to later evaluations (`EvalConfig.reference_call_s`).

After the last round the best kernel is measured again, interleaved against eager and
(unless `compile_baseline` is off) against torch.compile (`engine.remeasure`): those
fresh figures, with both sides' median and IQR, are the task's reported speedup; the
search's own maximum stays in the summary as `search_best_speedup`.

Failures never end the run: a malformed reply gets one repair attempt, then becomes
a buggy node with the parse error recorded; an `AgentError` (a call that failed after
its retries) makes that expansion a buggy node with the error. Only a broken
benchmarker harness or an internal bug fails the task.

Resume: after every node the whole state (tree with RNG state, round counter, best)
is replaced atomically in tree.json, so a run killed at any point resumes at the
first round that has no node yet.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from engine import context as ctx
from engine import prompts
from engine.agents.base import Agent, AgentError, AgentReply, AgentRequest, Role
from engine.bench import static_checks
from engine.bench.config import EvalConfig
from engine.bench.result import EvalResult
from engine.equivalence import is_reference_copy
from engine.events import (
    BestImproved,
    Event,
    EventSink,
    LLMCallFinished,
    LLMCallStarted,
    NodeBenchmarked,
    NodeSelected,
    NodeSnapshot,
    RoundFinished,
    TaskFailed,
    TaskFinished,
    TaskStarted,
)
from engine.parsing import CodeReply, ParseError, PlanReply, parse_code_reply, parse_plan_reply
from engine.remeasure import Remeasured, remeasure
from engine.summary import TaskSummary
from engine.taskdir import TaskDir, UsageRow
from engine.trace import ActionType, Trace
from engine.trace.sanitize import MIN_SECRET_LEN
from engine.tree import Selection, StarkNode, StarkTree

STATE_SCHEMA = 1
# Event fields that carry free text (errors, logs) and get the heuristic redaction too.
_FREE_TEXT_FIELDS = frozenset({"error", "log", "logs", "message", "detail"})


class SearchError(RuntimeError):
    """The task cannot go on (the benchmarker harness is broken, the state is unreadable)."""


@dataclass(slots=True)
class SearchConfig:
    """Everything that shapes a search; saved in tree.json so a resume uses the same."""

    rounds: int = 10
    seed: int = 0
    epsilon: float = 0.35
    root_limit: int = 5
    leaf_bias: float = 2.0
    leader_topk: int = 5
    n_child: int = 3
    # stop debugging a failed code once this many nodes re-emitted it verbatim
    max_reemits: int = 3
    # re-measure the best kernel against torch.compile too (Inductor: slow to build on CPU)
    compile_baseline: bool = True
    context_budget: int = ctx.DEFAULT_BUDGET_CHARS
    error_tail_chars: int = ctx.ERROR_TAIL_CHARS
    eval_config: EvalConfig = field(default_factory=lambda: EvalConfig(profile=True))

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1 (round 0 is the seed), not {self.rounds}")
        if self.context_budget < 1000:
            raise ValueError("context_budget must be at least 1000 characters")

    def make_tree(self) -> StarkTree:
        return StarkTree(
            epsilon=self.epsilon,
            root_limit=self.root_limit,
            leaf_bias=self.leaf_bias,
            leader_topk=self.leader_topk,
            n_child=self.n_child,
            max_reemits=self.max_reemits,
            seed=self.seed,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["eval_config"] = self.eval_config.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchConfig:
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        values["eval_config"] = EvalConfig.from_dict(values.get("eval_config") or {})
        return cls(**values)


def snapshot(node: StarkNode) -> NodeSnapshot:
    return NodeSnapshot(
        id=node.node_id,
        parent=node.parent_id,
        phase=node.phase,
        runnable=node.runnable,
        buggy=node.buggy,
        speedup=node.speedup,
        round=node.created_round,
        score=node.score,
        code_path=str(node.code_path) if node.code_path else "",
        error=node.error,
        baseline=node.baseline,
    )


class _SafeTrace:
    """Delegates to the Trace; a failing trace write is logged, never fatal to the search
    (the task directory keeps llm_io, metrics and the tree regardless)."""

    def __init__(self, trace: Any, task: TaskDir) -> None:
        self._trace = trace
        self._task = task

    @property
    def last_files(self) -> list[Any]:
        return list(getattr(self._trace, "last_files", []))

    def _guard(self, name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self._trace, name)(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            self._task.log(f"trace {name} failed: {type(exc).__name__}: {exc}")
            return 0

    def insert_designer_or_coder_record(self, *args: Any, **kwargs: Any) -> int:
        return self._guard("insert_designer_or_coder_record", *args, **kwargs)

    def insert_tester_record(self, *args: Any, **kwargs: Any) -> int:
        return self._guard("insert_tester_record", *args, **kwargs)

    def insert_conductor_record(self, *args: Any, **kwargs: Any) -> None:
        self._guard("insert_conductor_record", *args, **kwargs)


def _open_trace(op_name: str, task: TaskDir) -> _SafeTrace:
    """The task's Trace, told the run's known secrets (e.g. a key read through a custom
    environment variable name, which the trace's own heuristics cannot know about)."""
    secrets = [s for s in task.redact.secrets if len(s) >= MIN_SECRET_LEN]
    return _SafeTrace(Trace(op_name, task.task_id, task.trace_dir, secrets=secrets), task)


class StarkSearch:
    """One task's search: construct it for a new task (or use `resume()`), then `run()`.

    `events` is the EventSink every event goes to; it may be replaced before `run()`."""

    def __init__(
        self,
        *,
        task: TaskDir,
        reference_src: str,
        reference_path: str,
        agent: Agent,
        agent_kind: str,
        agent_public: dict[str, Any],
        config: SearchConfig,
        benchmarker: Any,
        events: EventSink | None = None,
        device: str = "auto",
        agent_fallback: str | None = None,
    ) -> None:
        self.task = task
        self.reference_src = reference_src
        self.reference_path = reference_path
        self.op_name = Path(reference_path).stem
        self.agent = agent
        self.agent_kind = agent_kind
        self.agent_public = agent_public
        self.config = config
        self.benchmarker = benchmarker
        self.events = events
        self.device = device
        self.agent_fallback = agent_fallback
        self.target = prompts.detect_target(device)
        self.tree = config.make_tree()
        self.next_round = 0
        # seconds per reference forward, from the first evaluation that timed it
        self.reference_call_s: float | None = None
        self.score_trace: list[list[float]] = []
        self.elapsed_s = 0.0
        self.finished = False
        self._started = time.monotonic()
        self._verify_files: list[str] = []
        self.task.create(reference_src)
        self.trace = _open_trace(self.op_name, task)

    # --- construction -----------------------------------------------------------------------

    @classmethod
    def resume(
        cls,
        task: TaskDir,
        *,
        agent: Agent,
        benchmarker: Any,
        events: EventSink | None = None,
        rounds: int | None = None,
    ) -> StarkSearch:
        """Continue from tree.json; `rounds` may extend the run's round budget."""
        state = task.load_state()
        if state is None:
            raise SearchError(f"{task.root} has no {task.state_path.name}: nothing to resume")
        if state.get("schema") != STATE_SCHEMA:
            raise SearchError(f"{task.state_path} has an unknown schema {state.get('schema')!r}")
        config = SearchConfig.from_dict(state["config"])
        if rounds is not None:
            config.rounds = rounds
        search = cls(
            task=task,
            reference_src=task.reference_path.read_text(encoding="utf-8"),
            reference_path=state["reference"],
            agent=agent,
            agent_kind=state["agent"],
            agent_public=state.get("agent_settings", {}),
            config=config,
            benchmarker=benchmarker,
            events=events,
            device=state.get("device", "auto"),
            agent_fallback=state.get("agent_fallback"),
        )
        search.tree = StarkTree.from_dict(state["tree"])
        search._label_baselines()
        search.next_round = int(state["next_round"])
        search.reference_call_s = state.get("reference_call_s")
        search.score_trace = [list(p) for p in state.get("score_trace", [])]
        search.elapsed_s = float(state.get("elapsed_s", 0.0))
        search.finished = bool(state.get("finished")) and search.next_round >= config.rounds
        return search

    def _label_baselines(self) -> None:
        """Label copies of the reference in a loaded tree (one saved before the label
        existed has none) and re-derive the best node from the labels."""
        for node in self.tree.nodes.values():
            node.baseline = bool(node.code) and is_reference_copy(node.code, self.reference_src)
        self.tree.recompute_best()

    @property
    def best_id(self) -> int | None:
        """The best kernel's node (the tree's rule: never a baseline, noise-aware)."""
        return self.tree.best_id

    # --- events and bookkeeping -------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Send an event to the sinks, its text redacted first: errors and logs echo what
        endpoints and kernels print, and the event stream reaches editors and pipes."""
        if self.events is not None:
            self.events(self._redacted(event))

    def _redacted(self, value: Any, free_text: bool = False) -> Any:
        """A copy of `value` with secrets removed from every string in it. Free text (error
        and log fields) gets the full heuristic redaction; identifiers and paths only lose
        the run's known secret values, so a heuristic can never break a path."""
        if isinstance(value, str):
            return self.task.redact(value) if free_text else self.task.redact.exact(value)
        if isinstance(value, dict):
            return {
                k: self._redacted(v, free_text or k in _FREE_TEXT_FIELDS) for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return type(value)(self._redacted(v, free_text) for v in value)
        if is_dataclass(value) and not isinstance(value, type):
            changes = {
                f.name: self._redacted(getattr(value, f.name), f.name in _FREE_TEXT_FIELDS)
                for f in fields(value)
                if f.init
            }
            return replace(value, **changes)
        return value

    @property
    def model_label(self) -> str:
        models = dict.fromkeys(self.agent.model_for(r) for r in (Role.PLAN, Role.CODE, Role.DEBUG))
        return ",".join(models)

    def _elapsed(self) -> float:
        return self.elapsed_s + (time.monotonic() - self._started)

    def state(self) -> dict[str, Any]:
        return {
            "schema": STATE_SCHEMA,
            "task_id": self.task.task_id,
            "reference": self.reference_path,
            "agent": self.agent_kind,
            "agent_settings": self.agent_public,
            "agent_fallback": self.agent_fallback,
            "model": self.model_label,
            "device": self.device,
            "config": self.config.to_dict(),
            "next_round": self.next_round,
            "best_id": self.best_id,
            "reference_call_s": self.reference_call_s,
            "score_trace": self.score_trace,
            "elapsed_s": round(self._elapsed(), 3),
            "finished": self.finished,
            "tree": self.tree.to_dict(),
        }

    # --- the loop ---------------------------------------------------------------------------

    def run(self) -> TaskSummary:
        """Run the remaining rounds and return the summary; a finished run just reports."""
        if self.finished:
            summary = self.task.load_summary()
            if summary is None:
                return self._finish()
            self.emit(TaskFinished(task_id=self.task.task_id, summary=summary.to_dict()))
            return summary
        self.emit(
            TaskStarted(
                task_id=self.task.task_id,
                reference=self.reference_path,
                task_dir=str(self.task.root),
                rounds=self.config.rounds,
                agent=self.agent_kind,
                model=self.model_label,
                device=self.target.device,
            )
        )
        self.task.log(
            f"task {self.task.task_id}: rounds {self.config.rounds}, starting at round "
            f"{self.next_round}, agent {self.agent_kind} ({self.model_label}), "
            f"device {self.target.device}"
        )
        try:
            if self.tree.root_id is None:
                self._commit(self._seed(0), 0)
            while self.next_round < self.config.rounds:
                round_ = self.next_round
                selection = self.tree.select_node()
                if selection is None:
                    self.task.log(f"round {round_}: every node is throttled or pruned; stopping")
                    break
                self._record_selection(selection, round_)
                node = self._expand(selection, round_)
                self._commit(node, round_)
            return self._finish()
        except BaseException as exc:
            message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self.task.log(f"task failed: {message}")
            self.emit(TaskFailed(task_id=self.task.task_id, error=self.task.redact(message)))
            raise

    def _record_selection(self, selection: Selection, round_: int) -> None:
        node = selection.node
        self.emit(
            NodeSelected(
                task_id=self.task.task_id,
                round=round_,
                node_id=node.node_id,
                mode=selection.mode,
                action=selection.action,
            )
        )
        reason = {
            "round": round_,
            "node_id": node.node_id,
            "mode": selection.mode,
            "source": selection.source,
            "candidates": selection.candidates,
            "action": selection.action,
            "node": node.header(),
            "leaders": list(self.tree.leader_ids),
            "epsilon": self.tree.epsilon,
        }
        self.trace.insert_conductor_record(
            "SelectNode",
            selection.describe(),
            json.dumps(reason, indent=2),
            node_id=node.node_id,
            round=round_,
            mode=selection.mode,
        )
        self.task.log(f"round {round_}: {selection.describe()}")

    # --- expansions -------------------------------------------------------------------------

    def _request(self, role: Role, prompt: str, round_: int, **details: Any) -> AgentRequest:
        """A request to an agent: this task's reference and device, plus the step's details."""
        return AgentRequest(
            role=role,
            prompt=prompt,
            round=round_,
            reference_src=self.reference_src,
            device=self.target.device,
            **details,
        )

    def _write_and_benchmark(
        self, node: StarkNode, request: AgentRequest, round_: int, action: str
    ) -> StarkNode:
        """Ask the code agent for this node's kernel, then benchmark it (or record why not)."""
        try:
            code, error = self._ask_code(request, round_, action)
        except AgentError as exc:
            return self._failed(node, f"LLM call failed ({action}): {exc}")
        if code is None:
            return self._failed(node, error)
        node.code = code.code
        return self._benchmark(node, round_)

    def _seed(self, round_: int) -> StarkNode:
        prompt = prompts.build_seed_prompt(self.reference_src, self.target, self._tolerance())
        request = self._request(Role.SEED, prompt, round_)
        node = StarkNode(node_id=self.tree.new_id(), parent_id=None, code="", phase="seed")
        node.created_round = round_
        return self._write_and_benchmark(node, request, round_, "seed")

    def _expand(self, selection: Selection, round_: int) -> StarkNode:
        parent = selection.node
        if parent.runnable:
            return self._optimize(parent, round_)
        return self._debug(parent, round_)

    def _optimize(self, parent: StarkNode, round_: int) -> StarkNode:
        node = StarkNode(
            node_id=self.tree.new_id(),
            parent_id=parent.node_id,
            code="",
            phase="optimize",
            created_round=round_,
        )
        history = ctx.summaries_for_plan(self.tree, parent, self.config.context_budget)
        profile = parent.metrics.profile if parent.metrics else None
        plan_prompt = prompts.build_plan_prompt(
            self.reference_src,
            self.target,
            parent.header(),
            parent.code,
            prompts.format_profile(profile),
            history.text,
        )
        plan_request = self._request(
            Role.PLAN,
            plan_prompt,
            round_,
            parent_code=parent.code,
            parent_plan=parent.plan,
            history=history.items,
            profile=[asdict(p) for p in profile] if profile else None,
        )
        try:
            plan, error = self._ask_plan(plan_request, round_, parent.code)
        except AgentError as exc:
            return self._failed(node, f"LLM call failed (plan): {exc}")
        if plan is None:
            return self._failed(node, error)
        node.plan_json = plan.plan_json
        node.anchored_code = plan.anchored_code

        code_context = ctx.context_for_code(self.tree, parent, self.config.context_budget)
        code_prompt = prompts.build_code_prompt(
            self.reference_src,
            self.target,
            parent.header(),
            plan.anchored_code,
            plan.plan_json,
            code_context.text,
        )
        code_request = self._request(
            Role.CODE,
            code_prompt,
            round_,
            parent_code=parent.code,
            parent_plan=parent.plan,
            anchored_code=plan.anchored_code,
            plan=plan.plan,
            history=code_context.items,
        )
        return self._write_and_benchmark(node, code_request, round_, "code")

    def _debug(self, buggy: StarkNode, round_: int) -> StarkNode:
        node = StarkNode(
            node_id=self.tree.new_id(),
            parent_id=buggy.node_id,
            code="",
            phase="debug",
            created_round=round_,
            plan_json=buggy.plan_json,  # the plan hint travels with the fix
        )
        base_code = self._code_to_debug(buggy)
        tail = ctx.error_tail(buggy, self.config.error_tail_chars)
        analysis = analyze_failure(buggy)
        self.trace.insert_conductor_record(
            "AnalyzeError", tail, analysis, node_id=buggy.node_id, round=round_
        )
        history = ctx.context_for_debug(self.tree, buggy, self.config.context_budget)
        prompt = prompts.build_debug_prompt(
            self.reference_src,
            self.target,
            buggy.header(),
            base_code,
            tail,
            analysis,
            buggy.plan_json or "(no plan: this kernel was a seed or the plan was lost)",
            history.text,
        )
        request = self._request(
            Role.DEBUG,
            prompt,
            round_,
            parent_code=base_code or None,
            parent_plan=buggy.plan,
            plan=buggy.plan,
            error_log=tail,
            history=history.items,
        )
        return self._write_and_benchmark(node, request, round_, "debug")

    def _code_to_debug(self, node: StarkNode) -> str:
        """The failing node's code; for a node that never got code (malformed reply,
        failed call), the closest ancestor's code, which the failed step started from."""
        current: StarkNode | None = node
        while current is not None:
            if current.code:
                return current.code
            current = self.tree.parent(current)
        return ""

    # --- agent calls ------------------------------------------------------------------------

    def _call(self, request: AgentRequest, round_: int, role_label: str, action: str) -> AgentReply:
        """One LLM call with its events, llm_io files, usage row and trace record."""
        model = self.agent.model_for(request.role)
        event_role = str(request.role)
        self.emit(
            LLMCallStarted(task_id=self.task.task_id, round=round_, role=event_role, model=model)
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
            self._record_call(request, round_, role_label, action, failed, error)
            self.task.log(f"round {round_}: {role_label} call failed: {error}")
            raise
        if not reply.latency_s:
            reply.latency_s = time.monotonic() - start
        reply.model = reply.model or model
        self._record_call(request, round_, role_label, action, reply, None)
        return reply

    def _record_call(
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
            node_id=self.tree.new_id(),
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

    def _ask_plan(
        self, request: AgentRequest, round_: int, parent_code: str
    ) -> tuple[PlanReply | None, str]:
        reply = self._call(request, round_, "plan", "DO_DESIGNER")
        try:
            plan = parse_plan_reply(reply.text, parent_code)
        except ParseError as exc:
            self._check("CheckDesigner", reply.text, round_, ok=False, error=str(exc), repair=True)
            repair = repair_request(request, reply.text, exc)
            reply = self._call(repair, round_, "plan_repair", "FIX_DESIGNER")
            try:
                plan = parse_plan_reply(reply.text, parent_code)
            except ParseError as exc2:
                self._check("CheckDesigner", reply.text, round_, ok=False, error=str(exc2))
                return None, f"malformed plan reply after one repair attempt: {exc2}"
        self._check(
            "CheckDesigner",
            reply.text,
            round_,
            ok=True,
            warnings=plan.warnings,
            title=plan.plan["title"],
        )
        return plan, ""

    def _ask_code(
        self, request: AgentRequest, round_: int, role_label: str
    ) -> tuple[CodeReply | None, str]:
        action = "FIX_CODER" if request.role is Role.DEBUG else "DO_CODER"
        reply = self._call(request, round_, role_label, action)
        if reply.refusal:  # the agent declined (e.g. nothing it knows fixes this failure)
            self._check("CheckCoder", reply.text, round_, ok=False, refusal=reply.refusal)
            return None, f"{role_label} agent could not fix: {reply.refusal}"
        try:
            code = parse_code_reply(reply.text)
        except ParseError as exc:
            self._check("CheckCoder", reply.text, round_, ok=False, error=str(exc), repair=True)
            repair = repair_request(request, reply.text, exc)
            reply = self._call(repair, round_, f"{role_label}_repair", "FIX_CODER")
            try:
                code = parse_code_reply(reply.text)
            except ParseError as exc2:
                self._check("CheckCoder", reply.text, round_, ok=False, error=str(exc2))
                return None, f"malformed {role_label} reply after one repair attempt: {exc2}"
        self._check(
            "CheckCoder",
            reply.text,
            round_,
            ok=True,
            warnings=code.warnings,
            static_flags=static_checks.scan(code.code),
        )
        return code, ""

    def _check(self, kind: str, reply_text: str, round_: int, *, ok: bool, **facts: Any) -> None:
        """A CheckDesigner/CheckCoder record: what the search concluded about a reply."""
        verdict = {"ok": ok, **facts}
        self.trace.insert_conductor_record(
            kind,
            reply_text,
            json.dumps(verdict, indent=2),
            node_id=self.tree.new_id(),
            round=round_,
        )

    # --- benchmarking and commit ------------------------------------------------------------

    def _tolerance(self) -> str:
        cfg = self.config.eval_config
        return prompts.tolerance_text(cfg.atol, cfg.rtol)

    def _failed(self, node: StarkNode, error: str) -> StarkNode:
        """A node that never reached the benchmarker (failed call, malformed reply)."""
        node.error = self.task.redact(error)
        node.logs = node.error
        if node.code:
            node.code_path = self.task.write_code(node.node_id, node.code)
        self.task.log(f"node {node.node_id}: {node.error}")
        return node

    def eval_config(self) -> EvalConfig:
        """The task's EvalConfig, told the reference's forward time once it is known, so
        the worker can size its deadlines without timing the reference for that again."""
        cfg = self.config.eval_config
        if self.reference_call_s is None:
            return cfg
        return replace(cfg, reference_call_s=self.reference_call_s)

    def _evaluate(self, code: str) -> EvalResult:
        cfg = self.eval_config()
        result = self.benchmarker.evaluate(self.reference_src, code, cfg)
        if result.stage == "harness":  # one retry: the fork server restarts on demand
            self.task.log(f"benchmarker harness error, retrying once: {result.error}")
            result = self.benchmarker.evaluate(self.reference_src, code, cfg)
            if result.stage == "harness":
                raise SearchError(f"the benchmarker harness is broken: {result.error}")
        if self.reference_call_s is None and result.ref_ms is not None:
            self.reference_call_s = result.ref_ms.median / 1000.0
            self.task.log(f"reference forward: {result.ref_ms} (reused by later evaluations)")
        return result

    def _benchmark(self, node: StarkNode, round_: int) -> StarkNode:
        node.code_path = self.task.write_code(node.node_id, node.code)
        twin = self._identical_node(node.code)
        if twin is not None:
            return self._reuse_verdict(node, twin)
        result = self._evaluate(node.code)
        # A kernel's output may echo the environment: its error and log are free text that
        # reaches tree.json, events and prompts, so they are redacted once, here.
        result.log = self.task.redact(result.log)
        result.error = self.task.redact(result.error) if result.error else result.error
        node.metrics = result
        node.logs = result.log
        if not result.runnable:
            node.error = result.error or "incorrect output"
        profile = json.dumps([asdict(p) for p in result.profile]) if result.profile else ""
        self.trace.insert_tester_record(
            result.to_json(),
            result.log,
            profile,
            ActionType.VERIFY,
            reference_src=self.reference_src,
            candidate_src=node.code,
            eval_config=self.eval_config().to_dict(),
            node_id=node.node_id,
            round=round_,
        )
        self._verify_files = [str(p) for p in self.trace.last_files]
        return node

    def _identical_node(self, code: str) -> StarkNode | None:
        """The oldest benchmarked node whose code is byte-identical (sha256) to `code`."""
        digest = _sha256(code)
        for node_id in sorted(self.tree.nodes):
            other = self.tree.nodes[node_id]
            if other.metrics is not None and other.code and _sha256(other.code) == digest:
                return other
        return None

    def _reuse_verdict(self, node: StarkNode, twin: StarkNode) -> StarkNode:
        """Give a duplicate candidate its twin's verdict instead of timing it again: two
        identical kernels must not compete on timing noise, and the tree stays deterministic
        (leader ties go to the older node, so the duplicate never displaces its twin)."""
        assert twin.metrics is not None
        note = f"identical to node {twin.node_id}; verdict reused"
        node.metrics = EvalResult.from_dict(twin.metrics.to_dict())
        node.logs = f"{note}\n{twin.logs}" if twin.logs else note
        node.error = twin.error if not node.metrics.runnable else None
        node.reused_from = twin.node_id
        self._verify_files = []
        self.trace.insert_conductor_record(
            "CheckCoder",
            f"candidate of node {node.node_id} (sha256 {_sha256(node.code)[:16]})",
            json.dumps({"ok": True, "duplicate_of": twin.node_id, "note": note}, indent=2),
            node_id=node.node_id,
            round=node.created_round,
        )
        self.task.log(f"node {node.node_id}: {note}")
        return node

    def _commit(self, node: StarkNode, round_: int) -> None:
        """Add the node, persist everything it changed (tree.json last), then announce it."""
        node.created_round = round_
        node.baseline = bool(node.code) and is_reference_copy(node.code, self.reference_src)
        previous_best = self.best_id
        self.tree.add_node(node)
        if node.baseline:
            self.task.log(f"node {node.node_id}: the reference itself (baseline), not a kernel")
        self._note_reemits(node, round_)
        self.task.write_metrics(
            node.node_id,
            node.metrics,
            {
                "node_id": node.node_id,
                "parent_id": node.parent_id,
                "phase": node.phase,
                "round": round_,
                "score": node.score,
                "runnable": node.runnable,
                "error": node.error,
                "code_path": str(node.code_path) if node.code_path else None,
                "plan": node.plan,
                "reused_from": node.reused_from,
                "baseline": node.baseline,
            },
        )
        improved = self.best_id != previous_best
        if improved:
            self.task.write_best(node.code)
        best_score = self.tree.nodes[self.best_id].score if self.best_id is not None else 0.0
        self.score_trace.append([round_, best_score])
        self.next_round = round_ + 1
        self.task.save_state(self.state())
        verdict = f"speedup {node.score:.2f}x" if node.runnable else f"failed: {node.error}"
        self.task.log(f"round {round_}: node {node.node_id} ({node.phase}) {verdict}")

        self.emit(
            NodeBenchmarked(
                task_id=self.task.task_id,
                round=round_,
                node=snapshot(node),
                result=node.metrics.to_dict() if node.metrics else {},
                trace_files=self._verify_files if node.metrics else [],
            )
        )
        if improved:
            self.emit(
                BestImproved(
                    task_id=self.task.task_id,
                    round=round_,
                    node_id=node.node_id,
                    speedup=node.score,
                    code_path=str(node.code_path),
                )
            )
        best = self.tree.nodes[self.best_id] if self.best_id is not None else None
        self.emit(
            RoundFinished(
                task_id=self.task.task_id,
                round=round_,
                rounds=self.config.rounds,
                best_speedup=best.score if best else None,
                nodes=len(self.tree.nodes),
                buggy=sum(1 for n in self.tree.nodes.values() if n.buggy),
                tree=[snapshot(n) for n in self.tree.nodes.values()],
            )
        )

    def _note_reemits(self, node: StarkNode, round_: int) -> None:
        """Say so, once, when a failed code has been re-emitted often enough that the tree
        stops debugging it (`StarkTree.given_up`)."""
        twin = node.reused_from
        if twin is None or not node.buggy:
            return
        if self.tree.reemits().get(twin) != self.tree.max_reemits:
            return
        reason = (
            f"node {twin}'s failing code was re-emitted verbatim {self.tree.max_reemits} times "
            f"(last by node {node.node_id}); it and its copies are no longer debugged"
        )
        self.task.log(f"round {round_}: {reason}")
        self.trace.insert_conductor_record(
            "AnalyzeError",
            reason,
            json.dumps({"gave_up": twin, "copies": self.tree.reemits()[twin]}, indent=2),
            node_id=node.node_id,
            round=round_,
        )

    # --- finish -----------------------------------------------------------------------------

    def _remeasure(self, best: StarkNode) -> Remeasured:
        """Fresh interleaved figures for the best kernel; a failure is recorded, never fatal."""
        self.task.log(
            f"re-measuring node {best.node_id} against eager"
            + (" and torch.compile" if self.config.compile_baseline else "")
        )
        try:
            measured = remeasure(
                self.benchmarker,
                self.reference_src,
                best.code,
                self.eval_config(),
                compile_baseline=self.config.compile_baseline,
            )
        except Exception as exc:  # noqa: BLE001 - the search's result stands without it
            measured = Remeasured(error=self.task.redact(f"{type(exc).__name__}: {exc}"))
        if measured.error:
            measured.error = self.task.redact(measured.error)
        self.task.log(f"re-measured node {best.node_id}: {measured.text() or '-'}")
        return measured

    def _finish(self) -> TaskSummary:
        from engine.plotting import plot_score_curve

        figure: str | None = None
        if self.tree.nodes:
            try:
                figure = str(
                    plot_score_curve(
                        self.tree,
                        self.task.figures_dir / "score_curve.png",
                        title=f"{self.op_name}: STARK score by round",
                    )
                )
            except Exception as exc:  # noqa: BLE001 - a plotting problem must not lose the run
                self.task.log(f"could not draw the score curve: {exc}")
        best = self.tree.best()
        remeasured = self._remeasure(best) if best is not None else None
        if best is not None:
            self.task.write_best(best.code)
        usage = self.task.read_usage()
        llm_rows = [r for r in usage if _call_kind(r, self.agent_kind) == "llm"]
        cfg = self.config.eval_config
        summary = TaskSummary(
            task_id=self.task.task_id,
            reference=self.reference_path,
            task_dir=str(self.task.root),
            finished=True,
            best_speedup=(
                remeasured.vs_eager.speedup if remeasured and remeasured.vs_eager else None
            ),
            search_best_speedup=best.score if best else None,
            remeasured=remeasured,
            best_node=best.node_id if best else None,
            best_round=best.created_round if best else None,
            best_kernel=str(self.task.best_kernel_path) if best else None,
            correct=best is not None,
            nodes=len(self.tree.nodes),
            correct_nodes=sum(1 for n in self.tree.nodes.values() if n.runnable),
            buggy_nodes=sum(1 for n in self.tree.nodes.values() if n.buggy),
            baseline_nodes=sum(1 for n in self.tree.nodes.values() if n.baseline),
            rounds=self.config.rounds,
            rounds_run=self.next_round,
            llm_calls=len(llm_rows),
            agent_calls=len(usage) - len(llm_rows),
            failed_llm_calls=sum(1 for r in llm_rows if r.get("ok") == "0"),
            prompt_tokens=sum(int(r["prompt_tokens"] or 0) for r in usage),
            completion_tokens=sum(int(r["completion_tokens"] or 0) for r in usage),
            cost_usd=_sum_cost(usage),
            agent=self.agent_kind,
            agent_fallback=self.agent_fallback,
            model=self.model_label,
            device=self.target.device,
            seed=self.config.seed,
            atol=cfg.atol,
            rtol=cfg.rtol,
            score_trace=[list(point) for point in self.score_trace],
            figure=figure,
            wall_s=round(self._elapsed(), 3),
        )
        self.finished = True
        self.task.write_summary(summary)
        self.task.save_state(self.state())
        self.emit(TaskFinished(task_id=self.task.task_id, summary=summary.to_dict()))
        return summary


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


def _sha256(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()


def _call_kind(row: dict[str, str], agent_kind: str) -> str:
    """A usage.csv row's kind; rows written before the column existed by the task's agent."""
    kind = row.get("kind") or ""
    if kind in ("llm", "agent"):
        return kind
    return "agent" if agent_kind == "offline" else "llm"


def _sum_cost(usage: list[dict[str, str]]) -> float | None:
    costs = [float(r["cost_usd"]) for r in usage if r.get("cost_usd")]
    return round(sum(costs), 6) if costs else None


def analyze_failure(node: StarkNode) -> str:
    """A short diagnosis for the debug agent: where it failed and what that usually means."""
    result = node.metrics
    if result is None:
        return (
            f"The previous step produced no benchmarkable kernel: {node.error}. "
            "Write a complete, correct ModelNew module in the required format."
        )
    stage = result.stage or ("correctness" if result.compiled else "compile")
    hints = {
        "compile": "The module failed to build or import: fix syntax, imports, or the "
        "extension source (the compiler output is in the log).",
        "import": "Importing the module failed: check imports and top-level code.",
        "runtime": "forward raised an exception: check shapes, dtypes, devices and indexing.",
        "correctness": "The output differs from the reference: check the maths, reductions, "
        "broadcasting, boundary handling and numerical precision.",
        "timeout": "The kernel took too long or hung: look for infinite loops, excessive "
        "compilation, or pathological sizes.",
        "crash": "The process died (segfault/abort/OOM): check out-of-bounds memory "
        "accesses and allocation sizes.",
        "reference": "The reference itself failed in the harness.",
    }
    lines = [f"Failure stage: {stage}.", f"Error: {result.error or node.error or 'unknown'}."]
    if result.error_location is not None:
        where = result.error_location
        lines.append(f"Location: line {where.line} of the kernel file ({where.function or '?'}).")
    if result.max_abs_err is not None:
        lines.append(f"Max abs error vs reference: {result.max_abs_err:.3g}.")
    if result.flags:
        lines.append(f"Benchmarker flags: {', '.join(result.flags)}.")
    lines.append(hints.get(stage, "Read the error output carefully."))
    return " ".join(lines)
