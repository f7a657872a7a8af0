"""The three ways a round adds a node: seed, optimize (plan then code) and debug.

Each builds its prompt from the tree's context, asks the agent (`engine.search.calls`) and
benchmarks the reply (`engine.search.benchmarking`); a failed call or a malformed reply
becomes a buggy node with the reason, never an exception. `new_node` and
`debug_request` are shared with the one-shot `stark debug`.

A round is two halves so that several can run at once (`SearchConfig.parallel`): `prepare`
reads the tree (the context of every prompt the round will send, the code to debug) on the
coordinating thread, at dispatch; `execute` asks the agent and benchmarks, on any thread,
and never reads the tree. The context is therefore the tree as it was when the round was
selected, whatever other rounds commit meanwhile.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from engine.agents import prompts
from engine.agents.base import AgentError, AgentRequest, HistoryItem, Role
from engine.artifacts.taskdir import TaskDir
from engine.search import context as ctx
from engine.search.benchmarking import NodeBenchmarker
from engine.search.calls import AgentCalls
from engine.search.config import SearchConfig
from engine.search.diagnosis import analyze_failure
from engine.search.node import Phase, StarkNode
from engine.search.trace_guard import SafeTrace
from engine.search.tree import Selection, StarkTree

NO_PLAN_HINT = "(no plan: this kernel was a seed or the plan was lost)"


@dataclass(slots=True)
class PreparedRound:
    """A dispatched round's work, with everything it needs from the tree already read: the
    first request (the plan prompt of an optimize round, the debug prompt of a debug round)
    and, for optimize, the parent and the coder's context (the code prompt waits for the
    plan)."""

    node: StarkNode
    round: int
    request: AgentRequest
    parent_header: str = ""
    parent_code: str = ""
    parent_plan: dict[str, Any] | None = None
    code_context: ctx.Context | None = None  # optimize only

    @property
    def action(self) -> str:
        return "optimize" if self.node.phase == "optimize" else "debug"


def new_node(
    node_id: int,
    parent: StarkNode | None,
    phase: Phase,
    round_: int,
    *,
    code: str = "",
    plan_json: str | None = None,
) -> StarkNode:
    """A node about to be filled in by an expansion (or a one-shot debug)."""
    return StarkNode(
        node_id=node_id,
        parent_id=parent.node_id if parent is not None else None,
        code=code,
        phase=phase,
        created_round=round_,
        plan_json=plan_json,
    )


def debug_request(
    *,
    reference_src: str,
    target: prompts.Target,
    header: str,
    code: str,
    error_log: str,
    analysis: str,
    round_: int,
    plan_hint: str,
    history_text: str,
    plan: dict[str, Any] | None = None,
    history: list[HistoryItem] | None = None,
) -> AgentRequest:
    """The debug agent's request for a failing kernel: its code, the tail of its error log,
    the diagnosis, the plan it implemented and what was tried around it."""
    prompt = prompts.build_debug_prompt(
        reference_src, target, header, code, error_log, analysis, plan_hint, history_text
    )
    return AgentRequest(
        role=Role.DEBUG,
        prompt=prompt,
        round=round_,
        reference_src=reference_src,
        device=target.device,
        parent_code=code or None,
        parent_plan=plan,
        plan=plan,
        error_log=error_log,
        history=list(history or []),
    )


class Expansions:
    """Seed, optimize and debug steps of one task's search."""

    def __init__(
        self,
        *,
        reference_src: str,
        target: prompts.Target,
        config: SearchConfig,
        tree: StarkTree,
        task: TaskDir,
        trace: SafeTrace,
        calls: AgentCalls,
        bench: NodeBenchmarker,
    ) -> None:
        self.reference_src = reference_src
        self.target = target
        self.config = config
        self.tree = tree
        self.task = task
        self.trace = trace
        self.calls = calls
        self.bench = bench

    def seed(self, round_: int) -> StarkNode:
        cfg = self.config.eval_config
        tolerance = prompts.tolerance_text(cfg.atol, cfg.rtol)
        prompt = prompts.build_seed_prompt(self.reference_src, self.target, tolerance)
        request = self._request(Role.SEED, prompt, round_)
        node = new_node(self.tree.new_id(), None, "seed", round_)
        return self._write_and_benchmark(node, request, round_, "seed")

    def expand(self, selection: Selection, round_: int) -> StarkNode:
        """One child of the selected node, start to end (the sequential search)."""
        return self.execute(self.prepare(selection, round_, self.tree.new_id()))

    def prepare(
        self,
        selection: Selection,
        round_: int,
        node_id: int,
        tree: StarkTree | None = None,
    ) -> PreparedRound:
        """The round's requests from the tree (`tree`: a view of it as it was at dispatch;
        default the live one): optimize a runnable node, debug a buggy one."""
        view = self.tree if tree is None else tree
        parent = view.nodes[selection.node.node_id]
        if parent.runnable:
            return self._prepare_optimize(view, parent, round_, node_id)
        return self._prepare_debug(view, parent, round_, node_id)

    def execute(self, prepared: PreparedRound) -> StarkNode:
        """The agent calls and the benchmark of a prepared round (any thread)."""
        if prepared.action == "optimize":
            return self._optimize(prepared)
        return self._write_and_benchmark(prepared.node, prepared.request, prepared.round, "debug")

    def _prepare_optimize(
        self, tree: StarkTree, parent: StarkNode, round_: int, node_id: int
    ) -> PreparedRound:
        node = new_node(node_id, parent, "optimize", round_)
        budget = self.config.context_budget
        history = ctx.summaries_for_plan(tree, parent, budget)
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
        return PreparedRound(
            node=node,
            round=round_,
            request=plan_request,
            parent_header=parent.header(),
            parent_code=parent.code,
            parent_plan=parent.plan,
            code_context=ctx.context_for_code(tree, parent, budget),
        )

    def _optimize(self, prepared: PreparedRound) -> StarkNode:
        node, round_ = prepared.node, prepared.round
        try:
            plan, error = self.calls.ask_plan(
                prepared.request, round_, prepared.parent_code, node_id=node.node_id
            )
        except AgentError as exc:
            return self._failed(node, f"LLM call failed (plan): {exc}")
        if plan is None:
            return self._failed(node, error)
        node.plan_json = plan.plan_json
        node.anchored_code = plan.anchored_code

        code_context = prepared.code_context
        assert code_context is not None
        code_prompt = prompts.build_code_prompt(
            self.reference_src,
            self.target,
            prepared.parent_header,
            plan.anchored_code,
            plan.plan_json,
            code_context.text,
        )
        code_request = self._request(
            Role.CODE,
            code_prompt,
            round_,
            parent_code=prepared.parent_code,
            parent_plan=prepared.parent_plan,
            anchored_code=plan.anchored_code,
            plan=plan.plan,
            history=code_context.items,
        )
        return self._write_and_benchmark(node, code_request, round_, "code")

    def _prepare_debug(
        self, tree: StarkTree, buggy: StarkNode, round_: int, node_id: int
    ) -> PreparedRound:
        # the plan hint travels with the fix
        node = new_node(node_id, buggy, "debug", round_, plan_json=buggy.plan_json)
        tail = ctx.error_tail(buggy, self.config.error_tail_chars)
        analysis = analyze_failure(buggy)
        self.trace.insert_conductor_record(
            "AnalyzeError", tail, analysis, node_id=buggy.node_id, round=round_
        )
        history = ctx.context_for_debug(tree, buggy, self.config.context_budget)
        request = debug_request(
            reference_src=self.reference_src,
            target=self.target,
            header=buggy.header(),
            code=_code_to_debug(tree, buggy),
            error_log=tail,
            analysis=analysis,
            round_=round_,
            plan_hint=buggy.plan_json or NO_PLAN_HINT,
            history_text=history.text,
            plan=buggy.plan,
            history=history.items,
        )
        return PreparedRound(node=node, round=round_, request=request)

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
            code, error, step = self.calls.ask_code(request, round_, action, node_id=node.node_id)
        except AgentError as exc:
            return self._failed(node, f"LLM call failed ({action}): {exc}")
        if code is None:
            return self._failed(node, error)
        node.code = code.code
        return self.bench.benchmark(node, round_, step)

    def _failed(self, node: StarkNode, error: str) -> StarkNode:
        """A node that never reached the benchmarker (failed call, malformed reply)."""
        node.error = self.task.redact(error)
        node.logs = node.error
        if node.code:
            node.code_path = self.task.write_code(node.node_id, node.code)
        self.task.log(f"node {node.node_id}: {node.error}")
        return node


def _code_to_debug(tree: StarkTree, node: StarkNode) -> str:
    """The failing node's code; for a node that never got code (malformed reply, failed
    call), the closest ancestor's code, which the failed step started from."""
    current: StarkNode | None = node
    while current is not None:
        if current.code:
            return current.code
        current = tree.parent(current)
    return ""
