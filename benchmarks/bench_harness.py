"""Measures the benchmarker itself on this machine (a script, not a test).

Three figures, each against its target from issue 2:
  1. harness overhead per evaluation: everything except compile and kernel time
     (EvalResult.harness_overhead_s), with the DEFAULT config, on a tiny task and on every
     bundled example (examples/*.py with its candidates), plus the fork server's start;
  2. compile-cache hit: the C++ (or CUDA) candidate built cold into an empty cache,
     then evaluated again; ratio of compile_s, and proof the .so was not rebuilt;
  3. timing spread: the same kernel evaluated 5 times; max/min of its medians.

    .venv/bin/python benchmarks/bench_harness.py [--device cpu] [--repeats 10] [--json out.json]

Run it on a quiet machine: other load shows up directly in (1) and (3).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.bench import Benchmarker, EvalConfig, EvalResult  # noqa: E402

OVERHEAD_TARGET_S = 0.3
SPREAD_TARGET = {"cpu": 0.04, "cuda": 0.02}

CHEAP_REFERENCE = """
import torch
from torch import nn

N, D = 64, 256


class Model(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))

    def forward(self, x):
        return torch.relu(x * self.w)


def get_inputs():
    return [torch.randn(N, D)]


def get_init_inputs():
    return [D]
"""

CHEAP_CANDIDATE = """
import torch
from torch import nn


class ModelNew(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))

    def forward(self, x):
        return torch.clamp_min(x * self.w, 0.0)
"""

# Each bundled example with the honest candidate(s) written for it (device: the ones it needs).
EXAMPLE_CANDIDATES = {
    "cpu": (
        ("examples/elementwise_chain.py", "examples/candidates/elementwise_chain_cpp.py"),
        ("examples/row_softmax.py", "examples/candidates/row_softmax_inplace.py"),
        ("examples/linear_bias_gelu.py", "examples/candidates/linear_bias_gelu_addmm.py"),
        ("examples/row_reduction.py", "examples/candidates/row_reduction_vector_norm.py"),
    ),
    "cuda": (
        ("examples/elementwise_chain.py", "examples/candidates/elementwise_chain_cuda.py"),
        ("examples/row_softmax.py", "examples/candidates/row_softmax_triton.py"),
        ("examples/linear_bias_gelu.py", "examples/candidates/linear_bias_gelu_addmm.py"),
        ("examples/row_reduction.py", "examples/candidates/row_reduction_vector_norm.py"),
    ),
}

COMPILED_CANDIDATE = {
    "cpu": ("examples/elementwise_chain.py", "examples/candidates/elementwise_chain_cpp.py"),
    "cuda": ("examples/elementwise_chain.py", "examples/candidates/elementwise_chain_cuda.py"),
}


@dataclass
class Spread:
    """median and interquartile range of a list of samples."""

    median: float
    iqr: float
    n: int

    @classmethod
    def of(cls, samples: list[float]) -> Spread:
        if len(samples) < 2:
            return cls(samples[0] if samples else float("nan"), 0.0, len(samples))
        q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
        return cls(statistics.median(samples), q3 - q1, len(samples))


@dataclass
class ExampleOverhead:
    """Harness overhead of one bundled example under the default config."""

    example: str
    overhead_s: list[float] = field(default_factory=list)
    total_s: list[float] = field(default_factory=list)
    kernel_s: list[float] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.overhead_s)


@dataclass
class Report:
    device: str
    machine: dict[str, Any]
    server_start_s: float | None = None
    server_import_s: float | None = None
    overhead_s: Spread | None = None
    overhead_samples_s: list[float] = field(default_factory=list)
    example_overheads: list[ExampleOverhead] = field(default_factory=list)
    compile_cold_s: float | None = None
    compile_warm_s: float | None = None
    compile_speedup: float | None = None
    rebuilt: bool | None = None
    spread_ratio: float | None = None
    spread_medians_ms: list[float] = field(default_factory=list)
    spread_iqr_over_median: list[float] = field(default_factory=list)
    spread_speedups: list[float] = field(default_factory=list)
    reference_medians_ms: list[float] = field(default_factory=list)

    def checks(self) -> dict[str, bool]:
        spread_target = SPREAD_TARGET["cuda" if self.device == "cuda" else "cpu"]
        return {
            "overhead": self.overhead_s is not None and self.overhead_s.median <= OVERHEAD_TARGET_S,
            "spread": self.spread_ratio is not None and self.spread_ratio - 1 <= spread_target,
            "never_recompiled": self.rebuilt is False,
            "overhead_examples": all(
                row.median <= OVERHEAD_TARGET_S for row in self.example_overheads
            ),
        }


def machine_info() -> dict[str, Any]:
    import torch

    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_start": os.getloadavg(),
    }


def require_ok(result: EvalResult, what: str) -> EvalResult:
    if not result.correct:
        raise SystemExit(
            f"{what} did not pass ({result.stage}): {result.error}\n{result.log[-2000:]}"
        )
    return result


def built_libraries(cache_dir: Path) -> dict[str, tuple[int, int]]:
    """Every shared object in the cache, with (inode, mtime_ns): any rebuild changes this."""
    return {
        str(path.relative_to(cache_dir)): (path.stat().st_ino, path.stat().st_mtime_ns)
        for path in cache_dir.rglob("*.so")
    }


def measure_overhead(report: Report, device: str, repeats: int) -> None:
    config = EvalConfig(device=device)  # the default config, as `stark bench` runs it
    with tempfile.TemporaryDirectory(prefix="stark-bench-cache-") as cache:
        bench = Benchmarker(cache_dir=Path(cache))
        try:
            start = time.perf_counter()
            bench.warm_up()
            report.server_start_s = time.perf_counter() - start
            report.server_import_s = bench.sandbox.server_import_s
            for index in range(repeats):
                result = require_ok(
                    bench.evaluate(CHEAP_REFERENCE, CHEAP_CANDIDATE, config), "cheap candidate"
                )
                assert result.harness_overhead_s is not None
                report.overhead_samples_s.append(result.harness_overhead_s)
                print(f"  overhead eval {index + 1}/{repeats}: {result.harness_overhead_s:.3f} s")
        finally:
            bench.close()
    report.overhead_s = Spread.of(report.overhead_samples_s)


def measure_example_overheads(report: Report, device: str, repeats: int) -> None:
    """Overhead on the bundled examples: it grows with input size (fresh inputs drawn per
    trial, one in-place rescale and two freed outputs per timing round)."""
    config = EvalConfig(device=device)
    with tempfile.TemporaryDirectory(prefix="stark-bench-cache-") as cache:
        bench = Benchmarker(cache_dir=Path(cache))
        try:
            bench.warm_up()
            for reference_path, candidate_path in EXAMPLE_CANDIDATES[device]:
                reference = (ROOT / reference_path).read_text()
                candidate = (ROOT / candidate_path).read_text()
                row = ExampleOverhead(Path(candidate_path).stem)
                # One unmeasured evaluation first: it builds any C++ extension into the cache.
                require_ok(bench.evaluate(reference, candidate, config), row.example)
                for _ in range(repeats):
                    result = require_ok(bench.evaluate(reference, candidate, config), row.example)
                    assert result.harness_overhead_s is not None and result.ref_ms is not None
                    row.overhead_s.append(result.harness_overhead_s)
                    row.total_s.append(result.total_s or 0.0)
                    row.kernel_s.append(result.kernel_s or 0.0)
                    row.rounds.append(result.ref_ms.n)
                report.example_overheads.append(row)
                print(
                    f"  {row.example}: overhead {row.median:.3f} s "
                    f"(total {statistics.median(row.total_s):.2f} s, "
                    f"kernel {statistics.median(row.kernel_s):.2f} s, rounds {row.rounds})"
                )
        finally:
            bench.close()


def _spread_text(medians: list[float]) -> str:
    if not medians:
        return "-"
    ratio = max(medians) / min(medians)
    return f"{ratio - 1:+.1%} ({', '.join(f'{m:.3f}' for m in medians)} ms)"


def measure_compile_cache_and_spread(report: Report, device: str, spread_runs: int) -> None:
    reference_path, candidate_path = COMPILED_CANDIDATE[device]
    reference = (ROOT / reference_path).read_text()
    candidate = (ROOT / candidate_path).read_text()
    quick = EvalConfig(device=device, correctness_trials=3, timing_trials=5, warmup_s=0.05)
    with tempfile.TemporaryDirectory(prefix="stark-bench-cache-") as cache:
        cache_dir = Path(cache)
        bench = Benchmarker(cache_dir=cache_dir)
        try:
            bench.warm_up()
            cold = require_ok(bench.evaluate(reference, candidate, quick), "cold build")
            after_cold = built_libraries(cache_dir)
            warm = require_ok(bench.evaluate(reference, candidate, quick), "warm build")
            after_warm = built_libraries(cache_dir)
            report.compile_cold_s, report.compile_warm_s = cold.compile_s, warm.compile_s
            if cold.compile_s and warm.compile_s:
                report.compile_speedup = cold.compile_s / warm.compile_s
            report.rebuilt = not after_cold or after_cold != after_warm
            print(
                f"  compile cold {cold.compile_s:.2f} s, warm {warm.compile_s:.3f} s, "
                f"{len(after_cold)} .so file(s), rebuilt: {report.rebuilt}"
            )
            # Timing spread: the default (adaptive) timing, as the search engine uses it.
            default = EvalConfig(device=device)
            for index in range(spread_runs):
                result = require_ok(bench.evaluate(reference, candidate, default), "spread run")
                assert result.new_ms is not None
                report.spread_medians_ms.append(result.new_ms.median)
                report.spread_iqr_over_median.append(result.new_ms.iqr / result.new_ms.median)
                report.spread_speedups.append(result.speedup or float("nan"))
                report.reference_medians_ms.append(result.ref_ms.median)
                print(
                    f"  spread run {index + 1}/{spread_runs}: {result.new_ms} "
                    f"(reference {result.ref_ms})"
                )
            if built_libraries(cache_dir) != after_cold:
                report.rebuilt = True
        finally:
            bench.close()
    medians = report.spread_medians_ms
    report.spread_ratio = max(medians) / min(medians) if medians else None


def render(report: Report) -> str:
    checks = report.checks()
    mark = {True: "PASS", False: "FAIL"}
    spread_target = SPREAD_TARGET["cuda" if report.device == "cuda" else "cpu"]
    overhead = report.overhead_s
    rows = [
        (
            "harness overhead / eval, tiny task",
            f"{overhead.median:.3f} ± {overhead.iqr:.3f} s (n={overhead.n})" if overhead else "-",
            f"<= {OVERHEAD_TARGET_S} s",
            mark[checks["overhead"]],
        ),
        *(
            (
                f"  ... on {row.example}",
                f"{row.median:.3f} s (n={len(row.overhead_s)}, {max(row.rounds)} rounds max)",
                f"<= {OVERHEAD_TARGET_S} s",
                mark[row.median <= OVERHEAD_TARGET_S],
            )
            for row in report.example_overheads
        ),
        (
            "fork server start",
            f"{report.server_start_s:.2f} s (torch import {report.server_import_s or 0:.2f} s)"
            if report.server_start_s is not None
            else "-",
            "once per caller",
            "info",
        ),
        (
            "compile cold / warm",
            f"{report.compile_cold_s or 0:.2f} s / {report.compile_warm_s or 0:.3f} s "
            f"({report.compile_speedup or 0:.0f}x faster)",
            "cache hit",
            "info",
        ),
        (
            "identical candidate rebuilt",
            str(report.rebuilt),
            "never",
            mark[checks["never_recompiled"]],
        ),
        (
            f"timing spread (max/min of {len(report.spread_medians_ms)} medians)",
            f"{(report.spread_ratio or float('nan')) - 1:+.1%} "
            f"({', '.join(f'{m:.3f}' for m in report.spread_medians_ms)} ms)",
            f"<= {spread_target:.0%}",
            mark[checks["spread"]],
        ),
        (
            "speedup over the same runs",
            ", ".join(f"{x:.2f}x" for x in report.spread_speedups) or "-",
            "(both sides timed together)",
            "info",
        ),
        (
            "reference spread, same runs",
            _spread_text(report.reference_medians_ms),
            "(eager reference)",
            "info",
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    header = ("figure", "measured (median ± IQR)", "target", "result")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    out = [line(header), line(tuple("-" * w for w in widths))]
    out += [line(row).rstrip() for row in rows]
    load = report.machine.get("load_average_end") or report.machine["load_average_start"]
    cores = report.machine["cpu_count"] or 1
    if load[0] > 0.5 * cores:
        out.append(
            f"NOTE: load average {load[0]:.1f} on {cores} cores: the machine was busy, "
            "so overhead and spread are inflated; re-run on a quiet machine."
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--repeats", type=int, default=10, help="evaluations for the overhead")
    parser.add_argument("--spread-runs", type=int, default=5, help="evaluations for the spread")
    parser.add_argument(
        "--example-repeats", type=int, default=2, help="evaluations per bundled example (0: skip)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.spread_runs < 2 or args.example_repeats < 0:
        parser.error("--repeats must be >= 1, --spread-runs >= 2, --example-repeats >= 0")

    report = Report(device=args.device, machine=machine_info())
    print(f"device {args.device}; load average {report.machine['load_average_start']}")
    print("1/3 harness overhead")
    measure_overhead(report, args.device, args.repeats)
    if args.example_repeats > 0:
        print("   ... on the bundled examples (default config)")
        measure_example_overheads(report, args.device, args.example_repeats)
    print("2/3 + 3/3 compile cache and timing spread")
    measure_compile_cache_and_spread(report, args.device, args.spread_runs)
    report.machine["load_average_end"] = os.getloadavg()
    print()
    print(render(report))
    checks = report.checks()
    if args.json:
        args.json.write_text(json.dumps({**asdict(report), "checks": checks}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 1 if args.strict and not all(checks.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
