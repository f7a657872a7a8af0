"""What the editor says about an optimize job's best kernel, in one place (lenses, code
actions, hover, progress, the apply confirmation and `stark/jobUpdated`).

During the search the best speedup is the search's own figure: the maximum over many
noisy measurements, biased upwards, so it is shown as provisional ("best so far 1.84x
(search figure)") and never offered as an improvement. At the end the engine measures
the best kernel afresh against eager (and torch.compile) in one interleaved evaluation
(docs/events.md, `task_finished`: `best_speedup`, `search_best_speedup`, `remeasured`).
That figure is shown with both sides' median ± IQR, and the kernel is offered as faster
only when the re-measured speedup is above 1 *and* the two sides' IQRs lie apart
(`beyond_iqr`); otherwise it is "within noise" or "not faster". An engine older than the
re-measurement sends no `remeasured`: its final `best_speedup` counts as before (faster
when above 1)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from engine.artifacts.remeasured import Comparison, Remeasured, Timing

log = logging.getLogger(__name__)


class BestSource(StrEnum):
    SEARCH = "search"  # provisional: the search's figure while it runs
    REMEASURED = "remeasured"  # measured afresh after the search
    UNCONFIRMED = "unconfirmed"  # the re-measurement failed: only the search's figure
    ENGINE = "engine"  # an engine without re-measurement: its final figure


class MalformedRemeasure(ValueError):
    """A `remeasured` field without the documented shape; the message says where."""


def _number(data: dict[str, Any], key: str, where: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MalformedRemeasure(f"{where}.{key} = {value!r} is not a finite number")
    return float(value)


def _timing(data: Any, where: str) -> Timing:
    if not isinstance(data, dict):
        raise MalformedRemeasure(f"{where} is not an object")
    return Timing(median=_number(data, "median", where), iqr=_number(data, "iqr", where))


def _comparison(data: Any, where: str) -> Comparison | None:
    """Only the documented keys are read: a newer engine may add others."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise MalformedRemeasure(f"{where} is not an object")
    return Comparison(
        speedup=_number(data, "speedup", where),
        baseline_ms=_timing(data.get("baseline_ms"), f"{where}.baseline_ms"),
        candidate_ms=_timing(data.get("candidate_ms"), f"{where}.candidate_ms"),
        beyond_iqr=data.get("beyond_iqr") is True,
        noisy=data.get("noisy") is True,
    )


def parse_remeasured(data: Any) -> Remeasured | None:
    """The summary's `remeasured` object (None when null). A malformed one becomes a
    re-measurement without figures whose `error` says what was wrong (and is logged):
    a broken field must not break the job, nor pass for a confirmed speedup."""
    if data is None:
        return None
    try:
        if not isinstance(data, dict):
            raise MalformedRemeasure(f"remeasured is a {type(data).__name__}, not an object")
        error = data.get("error")
        return Remeasured(
            vs_eager=_comparison(data.get("vs_eager"), "remeasured.vs_eager"),
            vs_compile=_comparison(data.get("vs_compile"), "remeasured.vs_compile"),
            error=error if isinstance(error, str) else None,
        )
    except MalformedRemeasure as exc:
        log.warning("ignoring a malformed re-measurement in task_finished: %s", exc)
        return Remeasured(error=f"unreadable re-measurement: {exc}")


def _ms(value: float) -> str:
    return f"{value:.3g}"


def timing_text(comparison: Comparison, baseline: str) -> str:
    """`eager 12.1 ± 0.3 ms → 9.2 ± 0.2 ms` (median ± IQR of each side)."""
    base, cand = comparison.baseline_ms, comparison.candidate_ms
    return (
        f"{baseline} {_ms(base.median)} ± {_ms(base.iqr)} ms → "
        f"{_ms(cand.median)} ± {_ms(cand.iqr)} ms"
    )


@dataclass(frozen=True, slots=True)
class BestFigure:
    """The figure shown for a job's best kernel and what it allows."""

    speedup: float | None
    source: BestSource
    search_speedup: float | None = None
    vs_eager: Comparison | None = None
    vs_compile: Comparison | None = None
    error: str | None = None  # why the re-measurement gave no figure

    @property
    def faster(self) -> bool:
        """Offer it as an improvement: confirmed faster than eager beyond the noise."""
        if self.source is BestSource.REMEASURED:
            eager = self.vs_eager
            return eager is not None and eager.speedup > 1.0 and eager.beyond_iqr
        if self.source is BestSource.ENGINE:
            return self.speedup is not None and self.speedup > 1.0
        return False

    @property
    def verdict(self) -> str | None:
        """Why a final figure is not offered as faster (None when it is, or while the
        search runs)."""
        if self.source is BestSource.REMEASURED and not self.faster:
            assert self.vs_eager is not None
            return "within noise" if self.vs_eager.speedup > 1.0 else "not faster"
        if self.source is BestSource.ENGINE and not self.faster:
            return "not faster than the reference"
        if self.source is BestSource.UNCONFIRMED:
            return f"not re-measured: {self.error or 'unknown reason'}"
        return None

    def figure(self) -> str:
        """`1.31x vs eager, re-measured`, `1.84x (search figure)`, `1.50x`."""
        if self.source is BestSource.REMEASURED:
            return f"{self.speedup:.2f}x vs eager, re-measured"
        if self.source is BestSource.ENGINE:
            return f"{self.speedup:.2f}x"
        return f"{self.speedup:.2f}x (search figure)"

    def short(self) -> str:
        """For progress reports and the tree view: `best so far 1.84x (search figure)`,
        `best 1.31x vs eager, re-measured`, `best 1.03x vs eager, re-measured: within noise`."""
        prefix = "best so far" if self.source is BestSource.SEARCH else "best"
        verdict = self.verdict
        if self.source is BestSource.UNCONFIRMED:
            verdict = "not re-measured"
        return f"{prefix} {self.figure()}" + (f": {verdict}" if verdict else "")

    def detailed(self) -> str:
        """`short()` with both sides' median ± IQR when re-measured (lens titles)."""
        if self.source is BestSource.REMEASURED and self.vs_eager is not None:
            note = f": {self.verdict}" if self.verdict else ""
            return f"best {self.figure()} ({timing_text(self.vs_eager, 'eager')}){note}"
        if self.source is BestSource.UNCONFIRMED:
            return f"best {self.figure()}: {self.verdict}"
        if self.source is BestSource.ENGINE and not self.faster:
            return f"best {self.figure()} (no faster kernel found)"
        return self.short()

    def apply_label(self) -> str:
        """What the apply confirmation calls it: never "faster" for a kernel that is not."""
        if self.faster and self.source is BestSource.ENGINE:
            return f"best kernel ({self.speedup:.2f}x faster)"
        if self.faster:
            return f"best kernel ({self.figure()})"
        if self.source is BestSource.ENGINE:
            return f"best kernel ({self.speedup:.2f}x: not faster than the reference)"
        if self.source is BestSource.SEARCH:
            return f"best kernel so far ({self.figure()}, not re-measured yet)"
        return f"best kernel ({self.figure()}: {self.verdict})"

    def markdown(self) -> str:
        """Hover text: the figure, both sides' median ± IQR, and the search's figure."""
        if self.source is BestSource.SEARCH:
            return (
                f"best so far **{self.speedup:.2f}x** (the search's figure: the maximum over "
                "noisy measurements, re-measured when the search ends)"
            )
        if self.source is BestSource.ENGINE:
            return f"best **{self.speedup:.2f}x**" + (f" ({self.verdict})" if self.verdict else "")
        if self.source is BestSource.UNCONFIRMED:
            search = f"{self.search_speedup:.2f}x" if self.search_speedup is not None else "n/a"
            return f"best kernel not re-measured ({self.error}); search figure {search}"
        assert self.vs_eager is not None
        head = f"best **{self.vs_eager.speedup:.2f}x vs eager**, re-measured"
        head += " — faster beyond the IQRs" if self.faster else f" — {self.verdict}"
        rows = ["| baseline | baseline median ± IQR | kernel median ± IQR | speedup |"]
        rows.append("|---|---|---|---|")
        for name, comparison in (("eager", self.vs_eager), ("torch.compile", self.vs_compile)):
            if comparison is None:
                continue
            base, cand = comparison.baseline_ms, comparison.candidate_ms
            flags = ", beyond IQR" if comparison.beyond_iqr else ", within IQR"
            flags += ", noisy" if comparison.noisy else ""
            rows.append(
                f"| {name} | {_ms(base.median)} ± {_ms(base.iqr)} ms"
                f" | {_ms(cand.median)} ± {_ms(cand.iqr)} ms"
                f" | {comparison.speedup:.2f}x{flags} |"
            )
        lines = [head, "", *rows]
        if self.search_speedup is not None:
            lines += ["", f"search figure: {self.search_speedup:.2f}x (not used for the verdict)"]
        if self.error:
            lines.append(f"note: {self.error}")
        return "\n".join(lines)

    def payload(self) -> dict[str, Any]:
        return {"source": str(self.source), "label": self.short(), "faster": self.faster}


def best_figure(
    *,
    running_speedup: float | None,
    search_speedup: float | None,
    final: bool,
    reported_remeasure: bool,
    final_speedup: float | None,
    remeasured: Remeasured | None,
) -> BestFigure | None:
    """The figure for a job from its state (see stark_lsp.jobs.Job.best)."""
    if not final:
        if running_speedup is None:
            return None
        return BestFigure(running_speedup, BestSource.SEARCH, search_speedup=running_speedup)
    if not reported_remeasure:
        speedup = final_speedup if final_speedup is not None else running_speedup
        return None if speedup is None else BestFigure(speedup, BestSource.ENGINE)
    eager = remeasured.vs_eager if remeasured is not None else None
    if eager is not None:
        return BestFigure(
            eager.speedup,
            BestSource.REMEASURED,
            search_speedup=search_speedup,
            vs_eager=eager,
            vs_compile=remeasured.vs_compile if remeasured is not None else None,
            error=remeasured.error if remeasured is not None else None,
        )
    if search_speedup is None:
        return None
    error = (remeasured.error if remeasured is not None else None) or "no re-measurement reported"
    return BestFigure(
        search_speedup, BestSource.UNCONFIRMED, search_speedup=search_speedup, error=error
    )
