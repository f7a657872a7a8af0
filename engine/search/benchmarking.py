"""Benchmarking a node's kernel: one evaluation (with one retry of a broken harness),
or the verdict of a byte-identical kernel benchmarked before.

The reference's forward time is handed to later evaluations (`EvalConfig.reference_call_s`)
so the worker sizes its deadlines without timing the reference for that again. It comes only
from a trusted verdict (correct, none of `UNTRUSTED_REFERENCE_FLAGS`: a candidate that
slows or rewrites the reference's timing must not stretch every later deadline), preferably
the seed's or another copy of the reference; a candidate's verdict only fills it while
nothing else did, and never changes it afterwards. It is learnt when a node is committed
(`learn_from`, in round order) and a resume re-derives it from the tree. A kernel's error and
log are free text that reaches tree.json, events and prompts, so they are redacted once, here.

Duplicates in a parallel search: a candidate reuses the verdict of the oldest *older* node with
byte-identical code, committed or still in flight. It first waits until every older round in
flight has its code (or ended without any), and, when the twin is in flight, for the twin's
verdict; so which node reuses which is the same whatever order the expansions finish in.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import asdict, dataclass, replace
from typing import Any

from engine.artifacts.taskdir import TaskDir
from engine.bench.config import EvalConfig
from engine.bench.result import EvalResult
from engine.search.config import Cancelled, SearchConfig, SearchError
from engine.search.equivalence import is_reference_copy
from engine.search.node import StarkNode
from engine.search.trace_guard import SafeTrace
from engine.search.tree import StarkTree
from engine.trace import ActionType

# A verdict carrying any of these cannot vouch for the reference's own timing.
UNTRUSTED_REFERENCE_FLAGS = frozenset(
    {
        "untrusted_timing",
        "harness_patched",
        "torch_patched",
        "reference_tampered",
        "timer_tampering",
        "noisy",
        "external_load",
        "background_thread",
        "forged_result",
    }
)


def trusted_reference_call_s(result: EvalResult) -> float | None:
    """Seconds per reference forward from a clean, correct verdict; None otherwise."""
    if not result.runnable or result.ref_ms is None or result.ref_ms.median <= 0:
        return None
    if UNTRUSTED_REFERENCE_FLAGS.intersection(result.flags):
        return None
    return result.ref_ms.median / 1000.0


def code_sha256(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(slots=True)
class _InFlight:
    """A node whose round is in flight: its code's digest once known, and whether its
    verdict is settled (benchmarked, reused, or never coming)."""

    node: StarkNode | None = None
    digest: str | None = None
    settled: bool = False


class NodeBenchmarker:
    """Judges the kernels of one task's nodes with the task's benchmarker and config. The
    expansions of a parallel search call `benchmark` from their threads; `expect`,
    `settle` and `learn_from` come from the coordinating one (see the module doc)."""

    def __init__(
        self,
        benchmarker: Any,
        *,
        task: TaskDir,
        trace: SafeTrace,
        tree: StarkTree,
        config: SearchConfig,
        reference_src: str,
    ) -> None:
        self.benchmarker = benchmarker
        self.task = task
        self.trace = trace
        self.tree = tree
        self.config = config
        self.reference_src = reference_src
        # seconds per reference forward, from a trusted verdict (`learn_reference_time`)
        self.reference_call_s: float | None = None
        # whether it came from a copy of the reference (seed/baseline) or a candidate
        self.reference_call_from_reference = False
        self.stop = threading.Event()  # set: no new evaluation starts (Cancelled)
        self._cond = threading.Condition()
        self._in_flight: dict[int, _InFlight] = {}
        # digest -> the oldest committed node with a verdict and that code
        self._committed: dict[str, StarkNode] = {}
        for node_id in sorted(tree.nodes):
            self._remember(tree.nodes[node_id])
        # node id -> the trace files of its evaluation ([] for a reused verdict)
        self._verify_files: dict[int, list[str]] = {}

    def _remember(self, node: StarkNode) -> None:
        if node.metrics is not None and node.code:
            self._committed.setdefault(code_sha256(node.code), node)

    def eval_config(self) -> EvalConfig:
        """The task's EvalConfig, told the reference's forward time once it is known."""
        cfg = self.config.eval_config
        if self.reference_call_s is None:
            return cfg
        return replace(cfg, reference_call_s=self.reference_call_s)

    def evaluate(self, code: str) -> EvalResult:
        """One evaluation; a harness failure is retried once, then ends the task."""
        cfg = self.eval_config()
        result = self.benchmarker.evaluate(self.reference_src, code, cfg)
        if result.stage == "harness":  # one retry: the fork server restarts on demand
            self.task.log(f"benchmarker harness error, retrying once: {result.error}")
            result = self.benchmarker.evaluate(self.reference_src, code, cfg)
            if result.stage == "harness":
                raise SearchError(f"the benchmarker harness is broken: {result.error}")
        return result

    # --- the coordinating thread -------------------------------------------------------------

    def expect(self, node_id: int) -> None:
        """A round for `node_id` is dispatched: younger candidates wait for its code."""
        with self._cond:
            self._in_flight[node_id] = _InFlight()

    def settle(self, node_id: int) -> None:
        """Its expansion ended (with or without a verdict): nobody waits for it any more."""
        with self._cond:
            entry = self._in_flight.get(node_id)
            if entry is not None:
                entry.settled = True
                self._cond.notify_all()

    def learn_from(self, node: StarkNode) -> list[str]:
        """A node was committed: keep its code for later twins, learn the reference time
        from its own (not a reused) verdict; returns its evaluation's trace files."""
        with self._cond:
            self._in_flight.pop(node.node_id, None)
            self._remember(node)
            files = self._verify_files.pop(node.node_id, [])
        result = node.metrics
        if (
            result is not None
            and node.reused_from is None
            and self.learn_reference_time(node, result)
        ):
            self.task.log(
                f"reference forward: {result.ref_ms} (node {node.node_id}; "
                "reused by later evaluations)"
            )
        return files

    def learn_reference_time(self, node: StarkNode, result: EvalResult) -> bool:
        """Keep the reference's forward time from this verdict when it is trusted: a seed or
        copy of the reference sets it once (replacing a candidate's), a candidate only while
        none is known. True when it changed."""
        seconds = trusted_reference_call_s(result)
        if seconds is None or self.reference_call_from_reference:
            return False
        from_reference = node.phase == "seed" or is_reference_copy(node.code, self.reference_src)
        if self.reference_call_s is not None and not from_reference:
            return False
        self.reference_call_s = seconds
        self.reference_call_from_reference = from_reference
        return True

    def relearn_reference_time(self) -> None:
        """Re-derive the reference's forward time from the tree's own verdicts (a resume),
        in node order, instead of trusting a figure saved by older code."""
        self.reference_call_s = None
        self.reference_call_from_reference = False
        for node_id in sorted(self.tree.nodes):
            node = self.tree.nodes[node_id]
            if node.metrics is not None and node.reused_from is None:
                self.learn_reference_time(node, node.metrics)

    def benchmark(self, node: StarkNode, round_: int, step: int | None = None) -> StarkNode:
        """Write the node's code, judge it (or reuse its twin's verdict) and record that;
        `step`: the trace step of the reply the code came from."""
        node.code_path = self.task.write_code(node.node_id, node.code)
        try:
            twin = self._twin(node)
            if twin is not None:
                return self._reuse_verdict(node, twin, step)
            if self.stop.is_set():
                raise Cancelled(f"node {node.node_id}: the search stopped")
            return self._judge(node, round_)
        finally:
            self.settle(node.node_id)

    def _twin(self, node: StarkNode) -> StarkNode | None:
        """The oldest older node with this code and a verdict. Waits for the older rounds in
        flight to have their code, and for an in-flight twin's verdict."""
        digest = code_sha256(node.code)
        with self._cond:
            mine = self._in_flight.setdefault(node.node_id, _InFlight())
            mine.node, mine.digest = node, digest
            self._cond.notify_all()

            def older() -> list[tuple[int, _InFlight]]:
                return sorted((i, e) for i, e in self._in_flight.items() if i < node.node_id)

            self._cond.wait_for(lambda: all(e.digest or e.settled for _, e in older()))
            committed = self._committed.get(digest)
            if committed is not None:
                return committed
            twins = [e for _, e in older() if e.digest == digest]
            if not twins:
                return None
            self._cond.wait_for(lambda: twins[0].settled)
            twin = twins[0].node
            return twin if twin is not None and twin.metrics is not None else None

    def _judge(self, node: StarkNode, round_: int) -> StarkNode:
        result = self.evaluate(node.code)
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
        with self._cond:
            self._verify_files[node.node_id] = [str(p) for p in self.trace.last_files]
        return node

    def _reuse_verdict(self, node: StarkNode, twin: StarkNode, step: int | None) -> StarkNode:
        """Give a duplicate candidate its twin's verdict instead of timing it again: two
        identical kernels must not compete on timing noise, and the tree stays deterministic
        (leader ties go to the older node, so the duplicate never displaces its twin)."""
        assert twin.metrics is not None
        note = f"identical to node {twin.node_id}; verdict reused"
        node.metrics = EvalResult.from_dict(twin.metrics.to_dict())
        node.logs = f"{note}\n{twin.logs}" if twin.logs else note
        node.error = twin.error if not node.metrics.runnable else None
        node.reused_from = twin.node_id
        self.trace.insert_conductor_record(
            "CheckCoder",
            f"candidate of node {node.node_id} (sha256 {code_sha256(node.code)[:16]})",
            json.dumps({"ok": True, "duplicate_of": twin.node_id, "note": note}, indent=2),
            node_id=node.node_id,
            round=node.created_round,
            step=step,
        )
        self.task.log(f"node {node.node_id}: {note}")
        return node
