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
        threads=2,
        drift=0.12,
        external_load=1.3,
        paired_speedup=1.98,
    )
    again = EvalResult.from_json(result.to_json())
    assert again == result
    data = json.loads(result.to_json())
    assert (data["threads"], data["drift"], data["external_load"]) == (2, 0.12, 1.3)
    assert data["paired_speedup"] == 1.98 and data["ref_ms"]["iqr"] == result.ref_ms.iqr


def test_noisy_verdict_says_so_with_both_spreads() -> None:
    result = EvalResult(
        compiled=True,
        correct=True,
        speedup=1.03,
        ref_ms=TimingStats.from_samples([8.0, 10.0, 12.0, 20.0]),
        new_ms=TimingStats.from_samples([9.0, 10.0, 11.0, 12.0]),
        flags=["noisy", "external_load"],
        threads=2,
        drift=0.04,
        external_load=1.3,
    )
    assert result.noisy and not EvalResult(flags=["external_load"]).noisy
    text = result.summary()
    assert text.startswith("CORRECT, speedup 1.03x (noisy)"), text
    assert f"reference: {result.ref_ms.median:.3f} ± {result.ref_ms.iqr:.3f} ms" in text
    assert f"candidate: {result.new_ms.median:.3f} ± {result.new_ms.iqr:.3f} ms" in text
    assert "(IQR 40.9% of median, n=4)" in text and "(IQR 14.3% of median, n=4)" in text
    assert "noisy: a side's IQR/median or its drift exceeded" in text and "half: 4%" in text
    assert "other processes used 1.30 cores" in text
    assert "device: cpu, 2 threads" in text


def test_json_is_strict_even_with_nan_errors() -> None:
    text = EvalResult(max_abs_err=float("nan"), mean_abs_err=float("inf")).to_json()
    data = json.loads(text)  # strict parsers reject NaN tokens
    assert data["max_abs_err"] is None and data["mean_abs_err"] is None
    assert "NaN" not in text and "Infinity" not in text


def test_unknown_keys_from_newer_versions_are_ignored() -> None:
    data = EvalResult(correct=True, compiled=True).to_dict()
    data["some_future_field"] = 1
    assert EvalResult.from_dict(data).correct
