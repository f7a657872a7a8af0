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
    # a side's IQR/median, or its first-vs-second-half drift, above this: flag `noisy`
    noisy_threshold: float = 0.10
    warmup_s: float = 0.1
    timing_budget_s: float = 4.0  # per side, for the adaptive loop
    compile_timeout_s: float = 300.0
    run_timeout_s: float = 120.0
    # Longest wait for the device lease before timing (lease.py); other evaluations' timings
    # on the same device go first. Counts against no other deadline.
    lease_timeout_s: float = 1800.0
    reference_call_s: float | None = None  # seconds per reference forward, measured earlier
    atol: float | None = None  # None: by dtype (1e-4 fp32, 1e-2 fp16/bf16)
    rtol: float | None = None
    num_threads: int | None = None  # None: torch's default in the worker
    profile: bool = False
    profile_top_k: int = 10
    # The profiler's own deadline (raised for a slow reference); it never fails a verdict.
    profile_timeout_s: float = 30.0
    # Resident memory (RSS) of the worker's process tree; None: 75% of the host's RAM.
    memory_limit_gb: float | None = None
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
        if not self.lease_timeout_s > 0:
            raise ValueError(f"lease_timeout_s must be positive, not {self.lease_timeout_s!r}")
        if not self.profile_timeout_s > 0:
            raise ValueError(f"profile_timeout_s must be positive, not {self.profile_timeout_s!r}")
        if self.reference_call_s is not None and not self.reference_call_s >= 0:
            raise ValueError(f"reference_call_s must be >= 0, not {self.reference_call_s!r}")
        if self.memory_limit_gb is not None and not self.memory_limit_gb > 0:
            raise ValueError(f"memory_limit_gb must be positive, not {self.memory_limit_gb!r}")
        if not self.noisy_threshold > 0:
            raise ValueError(f"noisy_threshold must be positive, not {self.noisy_threshold!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalConfig:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
