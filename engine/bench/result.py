"""The one verdict type that travels from the sandboxed worker to the CLI, the
search engine, the trace and the language server. It round-trips through JSON."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(slots=True)
class TimingStats:
    """Summary of per-call wall times in milliseconds."""

    median: float
    iqr: float
    mean: float
    min: float
    n: int

    @classmethod
    def from_samples(cls, samples_ms: list[float]) -> TimingStats:
        if not samples_ms:
            raise ValueError("no timing samples")
        ordered = sorted(samples_ms)
        return cls(
            median=_quantile(ordered, 0.5),
            iqr=_quantile(ordered, 0.75) - _quantile(ordered, 0.25),
            mean=sum(ordered) / len(ordered),
            min=ordered[0],
            n=len(ordered),
        )

    @property
    def relative_iqr(self) -> float:
        return self.iqr / self.median if self.median > 0 else math.inf

    def __str__(self) -> str:
        spread = f"{100 * self.relative_iqr:.1f}%" if self.median > 0 else "n/a"
        return f"{self.median:.3f} ± {self.iqr:.3f} ms (IQR {spread} of median, n={self.n})"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _quantile(ordered: list[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default) without importing numpy."""
    if len(ordered) == 1:
        return ordered[0]
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(slots=True)
class ProfileEntry:
    """One operator or kernel from torch.profiler, ranked by self time."""

    name: str
    self_ms: float
    calls: int
    percent: float


@dataclass(slots=True)
class ErrorLocation:
    """Where in the candidate file a runtime error surfaced (1-based line)."""

    line: int
    function: str = ""


@dataclass(slots=True)
class EvalResult:
    """Verdict of one evaluation. `correct` is only ever True when every trial
    passed every check; `error` is a one-line reason whenever something failed."""

    compiled: bool = False
    correct: bool = False
    speedup: float | None = None
    ref_ms: TimingStats | None = None
    new_ms: TimingStats | None = None
    max_abs_err: float | None = None
    mean_abs_err: float | None = None
    flags: list[str] = field(default_factory=list)
    error: str | None = None
    # compile | import | reference | correctness | runtime | timeout | crash | harness
    stage: str | None = None
    log: str = ""
    device: str = "cpu"
    trials_passed: int = 0
    correctness_trials: int = 0
    error_location: ErrorLocation | None = None
    profile: list[ProfileEntry] | None = None
    host_ms: TimingStats | None = None  # CUDA only: host time around a device-wide sync
    compile_s: float | None = None  # candidate import + load_inline builds + construction
    kernel_s: float | None = None  # time in the task's code: forward calls, get_inputs(), compares
    total_s: float | None = None
    harness_overhead_s: float | None = None
    candidate_sha256: str = ""
    threads: int | None = None  # torch threads both sides were timed with
    # The larger of the two sides' |second-half median - first-half median| / median.
    drift: float | None = None
    # Cores that other processes used on average while timing ran (None: not measured).
    external_load: float | None = None
    # Median over timing rounds of ref_i / new_i (both calls of a round run back to back).
    paired_speedup: float | None = None
    # Seconds the timing phase waited for the device lease (other evaluations timing on the
    # same device); None when it never asked (it failed before timing).
    lease_wait_s: float | None = None

    @property
    def runnable(self) -> bool:
        return self.compiled and self.correct

    @property
    def noisy(self) -> bool:
        """The timings are too spread (or drifted) for the speedup to be taken at face value."""
        return "noisy" in self.flags

    def add_flag(self, flag: str) -> None:
        if flag not in self.flags:
            self.flags.append(flag)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, **kwargs: Any) -> str:
        """Strict JSON: NaN/Inf (e.g. an error against a NaN output) become null."""
        return json.dumps(_finite(self.to_dict()), allow_nan=False, **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("ref_ms", "new_ms", "host_ms"):
            if isinstance(values.get(key), dict):
                values[key] = TimingStats(**values[key])
        if isinstance(values.get("error_location"), dict):
            values["error_location"] = ErrorLocation(**values["error_location"])
        if isinstance(values.get("profile"), list):
            values["profile"] = [ProfileEntry(**p) for p in values["profile"]]
        values["flags"] = list(values.get("flags") or [])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> EvalResult:
        return cls.from_dict(json.loads(text))

    def summary(self) -> str:
        """A short human verdict, as `stark bench` prints it."""
        if not self.compiled:
            head = f"FAILED to build/load ({self.stage or 'compile'}): {self.error}"
        elif not self.correct:
            head = f"INCORRECT ({self.stage or 'correctness'}): {self.error}"
        else:
            head = f"CORRECT, speedup {self.speedup:.2f}x" if self.speedup else "CORRECT"
            if self.noisy:
                head += " (noisy)"
        lines = [head]
        if self.ref_ms:
            lines.append(f"  reference: {self.ref_ms}")
        if self.new_ms:
            lines.append(f"  candidate: {self.new_ms}")
        if self.paired_speedup is not None and self.speedup:
            lines.append(
                f"  paired speedup (median of per-round ratios): {self.paired_speedup:.2f}x"
            )
        if self.noisy:
            lines.append(f"  noisy: {self._noise_reasons()}")
        if "external_load" in self.flags and self.external_load is not None:
            lines.append(
                f"  external load: other processes used {self.external_load:.2f} cores "
                "on average while timing ran"
            )
        if self.lease_wait_s is not None and self.lease_wait_s >= 0.05:
            lines.append(
                f"  waited {self.lease_wait_s:.2f}s for the device lease (other timings first)"
            )
        if self.max_abs_err is not None:
            lines.append(f"  max abs err {self.max_abs_err:.3g}, mean {self.mean_abs_err or 0:.3g}")
        if self.flags:
            lines.append(f"  flags: {', '.join(self.flags)}")
        device = self.device if self.threads is None else f"{self.device}, {self.threads} threads"
        lines.append(f"  device: {device}")
        return "\n".join(lines)

    def _noise_reasons(self) -> str:
        """The spreads are on the lines above; add the drift, which they don't show."""
        text = "a side's IQR/median or its drift exceeded the threshold; treat the speedup as rough"
        if self.drift is not None:
            text += f" (drift between first and second half: {100 * self.drift:.0f}%)"
        return text
