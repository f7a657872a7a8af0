"""`TaskSummary`: the outcome of one task, one type from the search to its consumers.

The search builds it, `summary.json` and the `task_finished` event carry its `to_dict()`
(the JSON shape is documented in docs/events.md and must not change: editors parse it),
and batch and the CLI read it back with `from_dict`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from engine.artifacts.remeasured import Remeasured


@dataclass(slots=True)
class TaskSummary:
    """What a finished task produced; field order is the JSON key order."""

    task_id: str
    reference: str
    task_dir: str
    finished: bool = True
    # The best non-baseline kernel's speedup vs eager, RE-MEASURED after the search (one
    # fresh interleaved evaluation); None without a correct kernel or when that failed.
    best_speedup: float | None = None
    best_node: int | None = None
    best_round: int | None = None
    best_kernel: str | None = None  # path of best_kernel.py; None without a correct kernel
    correct: bool = False
    nodes: int = 0
    correct_nodes: int = 0
    buggy_nodes: int = 0
    rounds: int = 0
    rounds_run: int = 0
    llm_calls: int = 0  # calls to a real model (offline-agent replies: agent_calls)
    failed_llm_calls: int = 0
    # Summed over the calls that reported tokens; None when none did (the offline agent).
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    agent: str = ""
    model: str = ""
    device: str = ""
    seed: int = 0
    score_trace: list[list[float]] = field(default_factory=list)  # [round, best score so far]
    figure: str | None = None
    wall_s: float = 0.0
    # --- added later; appended so the older keys keep their order ---
    # The search's own figure for the best node: the maximum over noisy measurements.
    search_best_speedup: float | None = None
    # The fresh interleaved figures behind best_speedup (vs eager, vs torch.compile).
    remeasured: Remeasured | None = None
    baseline_nodes: int = 0  # nodes whose code is the reference (never the best kernel)
    agent_calls: int = 0  # replies of the embedded offline agent (no model, no tokens)
    agent_fallback: str | None = None  # why --agent auto chose the offline agent
    atol: float | None = None  # correctness tolerances asked for; None: by dtype
    rtol: float | None = None
    # Which generated kernel code the best kernel contains ("cpp", "cuda", "triton"; see
    # engine.artifacts.generated_code): [] when it only wraps torch (e.g. torch.compile).
    best_generated: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSummary:
        """Rebuild from JSON; unknown keys (a newer writer) are ignored, missing optional
        ones (an older summary.json) take their defaults."""
        if not isinstance(data, dict):
            raise ValueError(f"a task summary must be a JSON object, not {type(data).__name__}")
        missing = [k for k in ("task_id", "reference", "task_dir") if k not in data]
        if missing:
            raise ValueError(f"task summary lacks {', '.join(missing)}")
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        if isinstance(values.get("remeasured"), dict):
            values["remeasured"] = Remeasured.from_dict(values["remeasured"])
        return cls(**values)
