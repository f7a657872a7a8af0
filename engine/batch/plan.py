"""What a batch is: its tasks, the search each one gets and the agent that plays it, saved as
`batch.json` in the run directory when the batch is created, so every worker and a later
`stark batch --resume RUN_DIR` run exactly that batch (the API key is never saved).

Each task's id is its file stem made safe (`metrics.unique_task_ids`), its directory
`NNN_<id>` (NNN: its position in the batch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.artifacts.taskdir import atomic_write_text, timestamp, unique_dir
from engine.batch.metrics import unique_task_ids
from engine.search import SearchConfig

PLAN_FILE = "batch.json"
SUMMARY_FILE = "summary.json"
PLAN_SCHEMA = 1


class BatchPlanError(ValueError):
    """A run directory without a readable batch.json (nothing to resume)."""


@dataclass(frozen=True, slots=True)
class BatchTask:
    """One reference of the batch and where its task directory goes."""

    index: int
    task_id: str
    reference: str  # absolute path, as given

    @property
    def name(self) -> str:
        """The task directory's name and the task's label in summary.json."""
        return f"{self.index:03d}_{self.task_id}"


@dataclass(slots=True)
class BatchPlan:
    """Where a batch writes, its tasks, and how each is searched."""

    run_dir: Path
    tasks: list[BatchTask]
    config: SearchConfig
    agent_kind: str  # offline | openai (auto resolved)
    agent_public: dict[str, Any]  # settings without the key
    agent_fallback: str | None
    device: str
    timeout_s: float | None = None  # the reference self-check's limit per phase
    seed: int = 0

    @classmethod
    def create(cls, out: Path, paths: list[Path], **kwargs: Any) -> BatchPlan:
        """A batch in a new timestamped directory under `out`, saved at once."""
        run_dir = unique_dir(out.resolve() / f"batch-{timestamp()}")
        run_dir.mkdir(parents=True)
        ids = unique_task_ids(paths)
        tasks = [
            BatchTask(index, task_id, str(path))
            for index, (path, task_id) in enumerate(zip(paths, ids, strict=True))
        ]
        plan = cls(run_dir, tasks, **kwargs)
        plan.save()
        return plan

    @classmethod
    def load(cls, run_dir: Path) -> BatchPlan:
        path = Path(run_dir).resolve() / PLAN_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BatchPlanError(
                f"{path.parent} is not a batch run directory (no {PLAN_FILE})"
            ) from None
        except (OSError, ValueError) as exc:
            raise BatchPlanError(f"unreadable {path}: {exc}") from None
        if not isinstance(data, dict) or data.get("schema") != PLAN_SCHEMA:
            raise BatchPlanError(f"{path} has an unknown schema")
        try:
            return cls(
                run_dir=path.parent,
                tasks=[BatchTask(t["index"], t["task_id"], t["reference"]) for t in data["tasks"]],
                config=SearchConfig.from_dict(data["config"]),
                agent_kind=data["agent"],
                agent_public=data.get("agent_settings") or {},
                agent_fallback=data.get("agent_fallback"),
                device=data["device"],
                timeout_s=data.get("timeout_s"),
                seed=int(data.get("seed", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BatchPlanError(f"{path} is incomplete: {exc!r}") from None

    def save(self) -> None:
        data = {
            "schema": PLAN_SCHEMA,
            "tasks": [
                {"index": t.index, "task_id": t.task_id, "reference": t.reference}
                for t in self.tasks
            ],
            "config": self.config.to_dict(),
            "agent": self.agent_kind,
            "agent_settings": self.agent_public,
            "agent_fallback": self.agent_fallback,
            "device": self.device,
            "timeout_s": self.timeout_s,
            "seed": self.seed,
        }
        atomic_write_text(self.run_dir / PLAN_FILE, json.dumps(data, indent=2, default=str))

    def task_dir(self, task: BatchTask) -> Path:
        return self.run_dir / task.name

    def header(self) -> dict[str, Any]:
        """summary.json's keys before the tasks: what the batch was asked to do."""
        return {
            "run_dir": str(self.run_dir),
            "agent": self.agent_kind,
            "rounds": self.config.rounds,
            "seed": self.seed,
            "device": self.device,
            "atol": self.config.eval_config.atol,
            "rtol": self.config.eval_config.rtol,
            "compile_baseline": self.config.compile_baseline,
            "agent_fallback": self.agent_fallback,
            "references": [t.reference for t in self.tasks],
        }
