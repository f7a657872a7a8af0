"""The batch loop: one search per reference into one run directory, the summary (with the
KernelBench metrics) rewritten atomically after every task.

A bad reference or a failed search is recorded as that task's outcome, never fatal to the
batch. Each task's id is its file stem made safe (`metrics.unique_task_ids`), its directory
`NNN_<id>` (NNN: its position in the batch).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.agents.factory import AgentSetup
from engine.artifacts.events import EventSink
from engine.artifacts.redact import Redactor
from engine.artifacts.taskdir import TaskDir, atomic_write_text, timestamp, unique_dir
from engine.batch.metrics import TaskOutcome, outcome_from_summary, summarize, unique_task_ids
from engine.search import SearchConfig, StarkSearch
from engine.search.reference import (
    ReferenceError_,
    check_reference_source,
    read_reference,
    self_check,
    self_check_config,
)


@dataclass(slots=True)
class BatchResult:
    """The tasks' outcomes, in order, and the summary written to summary.json."""

    outcomes: list[TaskOutcome]
    summary: dict[str, Any]


@dataclass(slots=True)
class BatchRun:
    """One batch: where it writes, what it runs and with which agent and search."""

    run_dir: Path
    paths: list[Path]
    setup: AgentSetup
    config: SearchConfig
    device: str
    timeout_s: float | None = None  # the reference self-check's limit per phase
    seed: int = 0

    @classmethod
    def create(cls, out: Path, paths: list[Path], **kwargs: Any) -> BatchRun:
        """A batch in a new timestamped directory under `out`."""
        run_dir = unique_dir(out.resolve() / f"batch-{timestamp()}")
        run_dir.mkdir(parents=True)
        return cls(run_dir, paths, **kwargs)

    def header(self) -> dict[str, Any]:
        """summary.json's keys before the tasks: what the batch was asked to do."""
        return {
            "run_dir": str(self.run_dir),
            "agent": self.setup.kind,
            "rounds": self.config.rounds,
            "seed": self.seed,
            "device": self.device,
            "atol": self.config.eval_config.atol,
            "rtol": self.config.eval_config.rtol,
            "compile_baseline": self.config.compile_baseline,
            "agent_fallback": self.setup.fallback,
            "references": [str(p) for p in self.paths],
        }

    def write_summary(self, outcomes: list[TaskOutcome]) -> dict[str, Any]:
        summary = {
            **self.header(),
            "tasks": [o.to_dict() for o in outcomes],
            "metrics": summarize(outcomes),
        }
        text = json.dumps(summary, indent=2, default=str)
        atomic_write_text(self.run_dir / "summary.json", text)
        return summary

    def run(
        self,
        benchmarker: Any,
        events: EventSink | None = None,
        on_outcome: Callable[[TaskOutcome], None] | None = None,
    ) -> BatchResult:
        """Every task in order; `on_outcome` hears of each as it ends."""
        outcomes: list[TaskOutcome] = []
        task_ids = unique_task_ids(self.paths)
        for index, (path, task_id) in enumerate(zip(self.paths, task_ids, strict=True)):
            outcome = self.run_one(f"{index:03d}_{task_id}", task_id, path, benchmarker, events)
            outcomes.append(outcome)
            self.write_summary(outcomes)
            if on_outcome is not None:
                on_outcome(outcome)
        return BatchResult(outcomes, self.write_summary(outcomes))

    def run_one(
        self,
        name: str,
        task_id: str,
        path: Path,
        benchmarker: Any,
        events: EventSink | None,
    ) -> TaskOutcome:
        """One task; a bad reference or a failed search is recorded, never fatal."""
        try:
            source = read_reference(path)
            check_reference_source(source, str(path))
            self_check(
                benchmarker, source, str(path), self_check_config(self.device, self.timeout_s)
            )
        except ReferenceError_ as exc:
            return TaskOutcome(name, str(path), None, False, None, error=str(exc))
        root = self.run_dir / name
        task = TaskDir(root, task_id, Redactor(self.setup.secrets))
        search = StarkSearch.for_agent(
            self.setup,
            task=task,
            reference_src=source,
            reference_path=str(path),
            config=self.config,
            benchmarker=benchmarker,
            device=self.device,
            events=events,
        )
        try:
            summary = search.run()
        except Exception as exc:  # noqa: BLE001 - the batch goes on; details in the task's log
            return TaskOutcome(name, str(path), str(root), False, None, error=task.redact(str(exc)))
        return outcome_from_summary(name, str(path), summary)
