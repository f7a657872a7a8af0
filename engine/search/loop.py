"""The STARK search loop: seed, then rounds of select -> plan/code or debug -> benchmark.

Round 0 asks for a seed kernel and makes it the root. Each round 1..R-1 selects one
node (`StarkTree.select_node`) and adds exactly one child:

- a runnable node gets a plan prompt (its profile, local history, leaders) and then a
  code prompt (anchored code + plan + neighbours' and leaders' context);
- a buggy node gets a debug prompt (error-log tail, siblings, leaders, plan hint).

Scoring: a node's score is its measured speedup over the reference if it compiled
and passed every correctness trial, else 0 (see `engine.search.tree.score_of`). A node whose
code is the reference (or equivalent, `engine.search.equivalence`) is a `baseline` node: it
may be expanded but is never the best kernel. The reference's forward time, from a trusted
verdict (preferably the seed's, `engine.search.benchmarking`), is handed to later
evaluations (`EvalConfig.reference_call_s`).

After the last round the best kernel is measured again, interleaved against eager and
(unless `compile_baseline` is off) against torch.compile (`engine.search.remeasure`): those
fresh figures, with both sides' median and IQR, are the task's reported speedup; the
search's own maximum stays in the summary as `search_best_speedup`.

Failures never end the run: a malformed reply gets one repair attempt, then becomes
a buggy node with the parse error recorded; an `AgentError` (a call that failed after
its retries) makes that expansion a buggy node with the error. Only a broken
benchmarker harness or an internal bug fails the task.

Resume: after every node the whole state (tree with RNG state, round counter, best)
is replaced atomically in tree.json, so a run killed at any point resumes at the
first round that has no node yet (`engine.search.state`).

Parallel search (`SearchConfig.parallel` K > 1): up to K rounds are in flight at once
(`engine.search.inflight`), each selected, prepared and announced on this thread and expanded
on its own; selection counts the children in flight (`StarkTree.select_node(pending)`).
Rounds commit in round order, one node each, so ids, tree.json and the round_finished events
come in order, and new rounds are selected only right after a commit, from the committed
prefix and the rounds in flight: the tree is the same function of the seed, the replies and
the verdicts whatever order the expansions finish in. tree.json lists the rounds in flight
(`in_flight`); a resume redoes them first, with the same selections and contexts.

This module is the loop and its bookkeeping only; the steps live next to it: `expansions`
(seed/optimize/debug), `calls` (agent calls, repair), `benchmarking` (evaluation, duplicate
verdicts), `state` (commit, tree.json), `finish` (figure, re-measurement, summary).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from engine.agents import prompts
from engine.agents.base import Agent
from engine.agents.factory import AgentSetup
from engine.artifacts.events import (
    Event,
    EventSink,
    LLMCallFinished,
    LLMCallStarted,
    TaskFailed,
    TaskFinished,
    TaskStarted,
)
from engine.artifacts.redact import redact_fields
from engine.artifacts.summary import TaskSummary
from engine.artifacts.taskdir import TaskDir
from engine.bench.config import EvalConfig
from engine.search import state as saved
from engine.search.benchmarking import NodeBenchmarker
from engine.search.calls import AgentCalls
from engine.search.config import SearchConfig
from engine.search.expansions import Expansions
from engine.search.finish import build_summary, draw_score_curve, remeasure_best
from engine.search.inflight import Dispatch, RoundRunner
from engine.search.node import StarkNode
from engine.search.trace_guard import open_trace
from engine.search.tree import Selection, StarkTree


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
        tree: StarkTree | None = None,
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
        self.tree = tree if tree is not None else config.make_tree()
        self.next_round = 0
        self.score_trace: list[list[float]] = []
        self.elapsed_s = 0.0
        self.finished = False
        self._started = time.monotonic()
        self._emit_lock = threading.Lock()
        self.stop = threading.Event()  # rounds still in flight stop at their next step
        self.rounds: RoundRunner | None = None  # while the rounds run
        self.resumed_dispatches: list[Dispatch] = []  # saved in-flight rounds, redone first
        self.task.create(reference_src)
        self.trace = open_trace(self.op_name, task)
        self.calls = AgentCalls(agent, task, self.trace, self.emit, self.stop)
        self.bench = NodeBenchmarker(
            benchmarker,
            task=task,
            trace=self.trace,
            tree=self.tree,
            config=config,
            reference_src=reference_src,
        )
        self.bench.stop = self.stop
        self.expansions = Expansions(
            reference_src=reference_src,
            target=self.target,
            config=config,
            tree=self.tree,
            task=task,
            trace=self.trace,
            calls=self.calls,
            bench=self.bench,
        )

    # --- construction -----------------------------------------------------------------------

    @classmethod
    def for_agent(
        cls,
        setup: AgentSetup,
        *,
        task: TaskDir,
        reference_src: str,
        reference_path: str,
        config: SearchConfig,
        benchmarker: Any,
        device: str,
        events: EventSink | None = None,
    ) -> StarkSearch:
        """A new task's search with a resolved agent (what `stark optimize` and `stark
        batch` both start)."""
        return cls(
            task=task,
            reference_src=reference_src,
            reference_path=reference_path,
            agent=setup.agent,
            agent_kind=setup.kind,
            agent_public=setup.public,
            config=config,
            benchmarker=benchmarker,
            events=events,
            device=device,
            agent_fallback=setup.fallback,
        )

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
        state = saved.read_state(task)
        config = SearchConfig.from_dict(state["config"])
        if rounds is not None:
            config.rounds = rounds
        reference_src = task.reference_path.read_text(encoding="utf-8")
        tree = StarkTree.from_dict(state["tree"])
        saved.label_baselines(tree, reference_src)
        search = cls(
            task=task,
            reference_src=reference_src,
            reference_path=state["reference"],
            agent=agent,
            agent_kind=state["agent"],
            agent_public=state.get("agent_settings", {}),
            config=config,
            benchmarker=benchmarker,
            events=events,
            device=state.get("device", "auto"),
            agent_fallback=state.get("agent_fallback"),
            tree=tree,
        )
        search.next_round = int(state["next_round"])
        search.resumed_dispatches = [Dispatch.from_dict(d) for d in state.get("in_flight", [])]
        search.bench.relearn_reference_time()  # from the tree, not a saved figure
        search.score_trace = [list(p) for p in state.get("score_trace", [])]
        search.elapsed_s = float(state.get("elapsed_s", 0.0))
        search.finished = bool(state.get("finished")) and search.next_round >= config.rounds
        return search

    @property
    def best_id(self) -> int | None:
        """The best kernel's node (the tree's rule: never a baseline, noise-aware)."""
        return self.tree.best_id

    @property
    def reference_call_s(self) -> float | None:
        """Seconds per reference forward, once an evaluation timed it."""
        return self.bench.reference_call_s

    def eval_config(self) -> EvalConfig:
        """The task's EvalConfig, told the reference's forward time once it is known."""
        return self.bench.eval_config()

    # --- events and bookkeeping -------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Send an event to the sinks, its text redacted first: errors and logs echo what
        endpoints and kernels print, and the event stream reaches editors and pipes. Events
        of rounds in flight come from their threads: one at a time, each whole; once the
        search stopped (a failed task), their call events are dropped, so task_failed is
        the last word."""
        if self.events is None:
            return
        cleaned = redact_fields(self.task.redact, event)
        with self._emit_lock:  # the stop is checked here: nothing slips in after task_failed
            if self.stop.is_set() and isinstance(event, LLMCallStarted | LLMCallFinished):
                return
            self.events(cleaned)

    @property
    def model_label(self) -> str:
        return self.calls.model_label

    def _elapsed(self) -> float:
        return self.elapsed_s + (time.monotonic() - self._started)

    def state(self) -> dict[str, Any]:
        """What tree.json holds: enough to resume exactly where the run stopped."""
        return {
            "schema": saved.STATE_SCHEMA,
            "task_id": self.task.task_id,
            "reference": self.reference_path,
            "agent": self.agent_kind,
            "agent_settings": self.agent_public,
            "agent_fallback": self.agent_fallback,
            "model": self.model_label,
            "device": self.device,
            "config": self.config.to_dict(),
            "next_round": self.next_round,
            "in_flight": [d.to_dict() for d in self.rounds.dispatches()] if self.rounds else [],
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
                self._commit(self.expansions.seed(0), 0)
            self.rounds = RoundRunner(
                width=self.config.parallel,
                next_round=self.next_round,
                tree=self.tree,
                expansions=self.expansions,
                bench=self.bench,
                announce=self._record_selection,
                commit=self._commit,
                log=self.task.log,
                resumed=self.resumed_dispatches,
            )
            self.rounds.run(self.config.rounds)
            return self._finish()
        except BaseException as exc:
            self.stop.set()  # rounds still in flight end at their next call or benchmark
            message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self.task.log(f"task failed: {message}")
            self.emit(TaskFailed(task_id=self.task.task_id, error=self.task.redact(message)))
            raise

    def _record_selection(self, selection: Selection, round_: int) -> None:
        saved.record_selection(self.task, self.trace, self.tree, selection, round_, self.emit)

    def _commit(self, node: StarkNode, round_: int) -> None:
        """Add the node, persist everything it changed (tree.json last), then announce it."""
        improved = saved.commit_node(
            self.task, self.tree, self.trace, node, round_, self.reference_src
        )
        trace_files = self.bench.learn_from(node)
        best_score = self.tree.nodes[self.best_id].score if self.best_id is not None else 0.0
        self.score_trace.append([round_, best_score])
        self.next_round = round_ + 1
        self.task.save_state(self.state())
        verdict = f"speedup {node.score:.2f}x" if node.runnable else f"failed: {node.error}"
        self.task.log(f"round {round_}: node {node.node_id} ({node.phase}) {verdict}")
        for event in saved.commit_events(
            self.task.task_id,
            self.tree,
            node,
            round_,
            self.config.rounds,
            improved=improved,
            trace_files=trace_files,
        ):
            self.emit(event)

    # --- finish -----------------------------------------------------------------------------

    def _finish(self) -> TaskSummary:
        figure = draw_score_curve(self.task, self.tree, self.op_name)
        best = self.tree.best()
        remeasured = None
        if best is not None:
            remeasured = remeasure_best(
                self.task,
                self.benchmarker,
                self.reference_src,
                best,
                self.eval_config(),
                compile_baseline=self.config.compile_baseline,
            )
            self.task.write_best(best.code)
        summary = build_summary(
            task=self.task,
            tree=self.tree,
            config=self.config,
            reference_path=self.reference_path,
            remeasured=remeasured,
            rounds_run=self.next_round,
            score_trace=self.score_trace,
            agent_kind=self.agent_kind,
            agent_fallback=self.agent_fallback,
            model=self.model_label,
            device=self.target.device,
            figure=figure,
            wall_s=round(self._elapsed(), 3),
        )
        self.finished = True
        self.task.write_summary(summary)
        self.task.save_state(self.state())
        self.emit(TaskFinished(task_id=self.task.task_id, summary=summary.to_dict()))
        return summary
