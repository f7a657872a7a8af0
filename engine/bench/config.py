"""Evaluation settings, shared by the CLI, the search engine and the worker."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Device = Literal["auto", "cpu", "cuda"]


@dataclass(slots=True)
class EvalConfig:
    device: Device = "auto"
    correctness_trials: int = 5
    # None: adaptive (stop when IQR/median < noise_target, bounded by min/max trials)
    timing_trials: int | None = None
    min_timing_trials: int = 30
    max_timing_trials: int = 200
    noise_target: float = 0.05
    warmup_s: float = 0.1
    timing_budget_s: float = 4.0  # per side, for the adaptive loop
    compile_timeout_s: float = 300.0
    run_timeout_s: float = 120.0
    atol: float | None = None  # None: by dtype (1e-4 fp32, 1e-2 fp16/bf16)
    rtol: float | None = None
    num_threads: int | None = None  # None: torch's default in the worker
    profile: bool = False
    profile_top_k: int = 10
    memory_limit_gb: float | None = None  # None: 75% of RAM on CPU, unlimited on CUDA
    excessive_speedup: float = 10.0
    keep_workdir: bool = False

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, not {self.device!r}")
        if self.correctness_trials < 1:
            raise ValueError("correctness_trials must be >= 1")
        if self.timing_trials is not None and self.timing_trials < 1:
            raise ValueError("timing_trials must be >= 1")
        if self.compile_timeout_s <= 0 or self.run_timeout_s <= 0:
            raise ValueError("timeouts must be positive")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalConfig:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
