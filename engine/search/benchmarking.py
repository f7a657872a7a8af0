"""Benchmarking a node's kernel: one evaluation (with one retry of a broken harness),
or the verdict of a byte-identical kernel benchmarked before.

The reference's forward time is handed to later evaluations (`EvalConfig.reference_call_s`)
so the worker sizes its deadlines without timing the reference for that again. It comes only
from a trusted verdict (correct, none of `UNTRUSTED_REFERENCE_FLAGS`: a candidate that
slows or rewrites the reference's timing must not stretch every later deadline), preferably
the seed's or another copy of the reference; a candidate's verdict only fills it while
nothing else did, and never changes it afterwards. A resume re-derives it from the tree. A kernel's error and log are free text that reaches
tree.json, events and prompts, so they are redacted once, here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from typing import Any

from engine.artifacts.taskdir import TaskDir
from engine.bench.config import EvalConfig
from engine.bench.result import EvalResult
from engine.search.config import SearchConfig, SearchError
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


class NodeBenchmarker:
    """Judges the kernels of one task's nodes with the task's benchmarker and config."""

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
        # the trace files of the last real evaluation ([] for a reused verdict)
        self.verify_files: list[str] = []

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

    def benchmark(self, node: StarkNode, round_: int) -> StarkNode:
        """Write the node's code, judge it (or reuse its twin's verdict) and record that."""
        node.code_path = self.task.write_code(node.node_id, node.code)
        twin = self.identical_node(node.code)
        if twin is not None:
            return self._reuse_verdict(node, twin)
        result = self.evaluate(node.code)
        if self.learn_reference_time(node, result):
            self.task.log(
                f"reference forward: {result.ref_ms} (node {node.node_id}; "
                "reused by later evaluations)"
            )
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
        self.verify_files = [str(p) for p in self.trace.last_files]
        return node

    def identical_node(self, code: str) -> StarkNode | None:
        """The oldest benchmarked node whose code is byte-identical (sha256) to `code`."""
        digest = code_sha256(code)
        for node_id in sorted(self.tree.nodes):
            other = self.tree.nodes[node_id]
            if other.metrics is not None and other.code and code_sha256(other.code) == digest:
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
        self.verify_files = []
        self.trace.insert_conductor_record(
            "CheckCoder",
            f"candidate of node {node.node_id} (sha256 {code_sha256(node.code)[:16]})",
            json.dumps({"ok": True, "duplicate_of": twin.node_id, "note": note}, indent=2),
            node_id=node.node_id,
            round=node.created_round,
        )
        self.task.log(f"node {node.node_id}: {note}")
        return node
