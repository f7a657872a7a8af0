"""EvalResult is the one verdict type end to end: it must round-trip through strict JSON."""

from __future__ import annotations

import json

from engine.bench.result import ErrorLocation, EvalResult, ProfileEntry, TimingStats


def test_timing_stats_from_samples() -> None:
    stats = TimingStats.from_samples([4.0, 1.0, 3.0, 2.0, 5.0])
    assert (stats.median, stats.iqr, stats.mean, stats.min, stats.n) == (3.0, 2.0, 3.0, 1.0, 5)


def test_round_trip_keeps_nested_types() -> None:
    result = EvalResult(
        compiled=True,
        correct=True,
        speedup=2.0,
        ref_ms=TimingStats.from_samples([2.0, 2.2]),
        new_ms=TimingStats.from_samples([1.0, 1.1]),
        flags=["excessive_speedup"],
        error_location=ErrorLocation(line=12, function="forward"),
        profile=[ProfileEntry(name="aten::add", self_ms=1.0, calls=3, percent=50.0)],
    )
    again = EvalResult.from_json(result.to_json())
    assert again == result


def test_json_is_strict_even_with_nan_errors() -> None:
    text = EvalResult(max_abs_err=float("nan"), mean_abs_err=float("inf")).to_json()
    data = json.loads(text)  # strict parsers reject NaN tokens
    assert data["max_abs_err"] is None and data["mean_abs_err"] is None
    assert "NaN" not in text and "Infinity" not in text


def test_unknown_keys_from_newer_versions_are_ignored() -> None:
    data = EvalResult(correct=True, compiled=True).to_dict()
    data["some_future_field"] = 1
    assert EvalResult.from_dict(data).correct
