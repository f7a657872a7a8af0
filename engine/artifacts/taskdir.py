"""The on-disk layout of one optimisation task, and crash-safe writes into it.

    TASK_DIR/
      ref_{task_id}.py          copy of the reference, so every benchmark uses the same one
      code/node_{id:04d}.py     every generated kernel
      evaluation/node_{id:04d}.json   metrics of each node (EvalResult + node facts)
      evaluation/llm_io/{seq:05d}_r{round:03d}_{role}_{prompt|reply|reasoning}.md
      figures/score_curve.png
      trace/                    the Trace module's records
      usage.csv                 one row per agent call (`kind`: llm, or agent for offline)
      tree.json                 the search state, replaced atomically after every node
      best_kernel.py, summary.json, search.log

Every text that reaches this directory passes through `Redactor` (`engine.artifacts.redact`),
so a secret that an endpoint echoes in an error message never lands on disk. The writers may
be called from several threads (a parallel search): llm_io numbers, usage.csv rows and
search.log lines are taken and written under one lock, so none is shared or torn.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.artifacts.redact import Redactor
from engine.artifacts.summary import TaskSummary
from engine.atomic_io import atomic_write_text
from engine.bench.result import EvalResult
from engine.trace.sanitize import MAX_NAME_LEN, sanitize_name

STATE_FILE = "tree.json"
SUMMARY_FILE = "summary.json"
USAGE_FIELDS = (
    "time",
    "round",
    "role",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "latency_s",
    "cost_usd",
    "ok",
    "error",
    "kind",
)


def safe_name(text: str) -> str:
    """A file-name-safe id (no separators, no traversal); the trace's rule, so task ids
    match the trace's file names."""
    return sanitize_name(text)


def plain_task_id(stem: str, max_len: int = MAX_NAME_LEN - 4) -> str:
    """A task id from a file stem with no hash suffix: unsafe characters become `_`,
    leading/trailing `_`/`-` go (`12_Matmul_with_diagonal_matrices_` ->
    `12_Matmul_with_diagonal_matrices`). The result is already safe, so `safe_name` keeps
    it as it is; two stems that clean to the same id are told apart by the caller
    (`-2`, `-3`: `engine.batch.metrics.unique_task_ids`), `max_len` leaves room for that."""
    cleaned = re.sub(r"_{2,}", "_", re.sub(r"[^A-Za-z0-9_-]+", "_", stem)).strip("_-")
    cleaned = cleaned[:max_len].rstrip("_-")
    return cleaned or "task"


@dataclass(slots=True)
class UsageRow:
    round: int
    role: str
    model: str
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float
    cost_usd: float | None
    ok: bool = True
    error: str | None = None
    kind: str = "llm"  # llm: a real model; agent: the embedded offline agent


class TaskDir:
    """Paths and writers for one task directory."""

    def __init__(self, root: Path, task_id: str, redactor: Redactor | None = None) -> None:
        self.root = Path(root).resolve()
        self.task_id = safe_name(task_id)
        self.redact = redactor or Redactor()
        self._llm_seq: int | None = None
        self._lock = threading.Lock()  # llm_io numbering, usage.csv and search.log appends

    # --- layout ------------------------------------------------------------------------------

    @property
    def code_dir(self) -> Path:
        return self.root / "code"

    @property
    def eval_dir(self) -> Path:
        return self.root / "evaluation"

    @property
    def llm_io_dir(self) -> Path:
        return self.eval_dir / "llm_io"

    @property
    def figures_dir(self) -> Path:
        return self.root / "figures"

    @property
    def trace_dir(self) -> Path:
        return self.root / "trace"

    @property
    def usage_csv(self) -> Path:
        return self.root / "usage.csv"

    @property
    def reference_path(self) -> Path:
        return self.root / f"ref_{self.task_id}.py"

    @property
    def state_path(self) -> Path:
        return self.root / STATE_FILE

    @property
    def summary_path(self) -> Path:
        return self.root / SUMMARY_FILE

    @property
    def best_kernel_path(self) -> Path:
        return self.root / "best_kernel.py"

    @property
    def log_path(self) -> Path:
        return self.root / "search.log"

    def create(self, reference_src: str) -> None:
        for directory in (self.code_dir, self.llm_io_dir, self.figures_dir, self.trace_dir):
            directory.mkdir(parents=True, exist_ok=True)
        if not self.reference_path.exists():
            atomic_write_text(self.reference_path, reference_src)
        if not self.usage_csv.exists():
            atomic_write_text(self.usage_csv, ",".join(USAGE_FIELDS) + "\n")
        else:
            self._upgrade_usage()

    def _upgrade_usage(self) -> None:
        """A usage.csv of an older run (fewer columns) gets today's header, its rows padded
        with empty cells, so a resumed run appends rows that line up."""
        with self.usage_csv.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows or tuple(rows[0]) == USAGE_FIELDS:
            return
        header = rows[0]
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(USAGE_FIELDS)
        for row in rows[1:]:
            cells = dict(zip(header, row, strict=False))
            writer.writerow([cells.get(name, "") for name in USAGE_FIELDS])
        atomic_write_text(self.usage_csv, buffer.getvalue())

    # --- artefacts ---------------------------------------------------------------------------

    def code_path(self, node_id: int) -> Path:
        return self.code_dir / f"node_{node_id:04d}.py"

    def metrics_path(self, node_id: int) -> Path:
        return self.eval_dir / f"node_{node_id:04d}.json"

    def write_code(self, node_id: int, code: str) -> Path:
        path = self.code_path(node_id)
        atomic_write_text(path, code)
        return path

    def write_metrics(self, node_id: int, result: EvalResult | None, facts: dict[str, Any]) -> Path:
        payload = {**facts, "result": result.to_dict() if result else None}
        path = self.metrics_path(node_id)
        atomic_write_text(path, self.redact(json.dumps(payload, indent=2, default=str)))
        return path

    def _next_llm_seq(self) -> int:
        if self._llm_seq is None:
            existing = [p.name.split("_", 1)[0] for p in self.llm_io_dir.glob("*_prompt.md")]
            self._llm_seq = max((int(s) for s in existing if s.isdigit()), default=0)
        self._llm_seq += 1
        return self._llm_seq

    def write_llm_io(
        self, round_: int, role: str, prompt: str, reply: str, reasoning: str = ""
    ) -> list[Path]:
        """Store one call's prompt and reply verbatim (secrets redacted)."""
        with self._lock:
            seq = self._next_llm_seq()
        stem = f"{seq:05d}_r{round_:03d}_{safe_name(role)}"
        paths = [self.llm_io_dir / f"{stem}_prompt.md", self.llm_io_dir / f"{stem}_reply.md"]
        atomic_write_text(paths[0], self.redact(prompt))
        atomic_write_text(paths[1], self.redact(reply))
        if reasoning:
            paths.append(self.llm_io_dir / f"{stem}_reasoning.md")
            atomic_write_text(paths[2], self.redact(reasoning))
        return paths

    def append_usage(self, row: UsageRow) -> None:
        buffer = io.StringIO()
        csv.writer(buffer).writerow(
            [
                datetime.now(UTC).isoformat(timespec="seconds"),
                row.round,
                row.role,
                row.model,
                "" if row.prompt_tokens is None else row.prompt_tokens,
                "" if row.completion_tokens is None else row.completion_tokens,
                f"{row.latency_s:.3f}",
                "" if row.cost_usd is None else f"{row.cost_usd:.6f}",
                int(row.ok),
                self.redact(row.error or ""),
                row.kind,
            ]
        )
        with self._lock, self.usage_csv.open("a", encoding="utf-8", newline="") as fh:
            fh.write(buffer.getvalue())
            fh.flush()
            os.fsync(fh.fileno())

    def read_usage(self) -> list[dict[str, str]]:
        if not self.usage_csv.exists():
            return []
        with self.usage_csv.open(encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh))

    def log(self, message: str) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        line = f"{stamp} {self.redact(message)}\n"
        with self._lock, self.log_path.open("a", encoding="utf-8") as fh:
            fh.write(line)

    # --- state -------------------------------------------------------------------------------

    def save_state(self, state: dict[str, Any]) -> None:
        text = json.dumps(state, indent=1, default=str)
        atomic_write_text(self.state_path, self.redact.exact(text))

    def load_state(self) -> dict[str, Any] | None:
        if not self.state_path.exists():
            return None
        return json.loads(self.state_path.read_text(encoding="utf-8"))

    def write_best(self, code: str) -> Path:
        atomic_write_text(self.best_kernel_path, code)
        return self.best_kernel_path

    def write_summary(self, summary: TaskSummary) -> Path:
        text = json.dumps(summary.to_dict(), indent=2, default=str)
        atomic_write_text(self.summary_path, self.redact(text))
        return self.summary_path

    def load_summary(self) -> TaskSummary | None:
        """The saved summary; None when there is none yet. Raises ValueError when the file
        is not a task summary."""
        if not self.summary_path.exists():
            return None
        return TaskSummary.from_dict(json.loads(self.summary_path.read_text(encoding="utf-8")))


def find_task_id(root: Path) -> str:
    """The task id of an existing task directory (from its ref_{id}.py)."""
    refs = sorted(Path(root).glob("ref_*.py"))
    if not refs:
        raise FileNotFoundError(f"{root} is not a STARK task directory (no ref_*.py)")
    return refs[0].stem[len("ref_") :]


def unique_dir(base: Path) -> Path:
    """`base`, or `base-2`, `base-3`, ... if it exists (two runs started in one second)."""
    root, n = base, 1
    while root.exists():
        n += 1
        root = base.with_name(f"{base.name}-{n}")
    return root


def timestamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")
