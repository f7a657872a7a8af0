"""How far from 1.00x does a candidate identical to the reference measure? (a script, not a test)

The candidate is the reference's own source with `class ModelNew(Model): pass` appended, so
any speedup other than 1.00x is measurement noise. It is evaluated RUNS times through the
real Benchmarker (default config apart from --device and --threads) and each run's verdict
is printed: speedup (the parent's, ratio of medians), the paired speedup (median of per-round
ratios), both sides' median ± IQR, drift, the load other processes put on the machine while
timing ran, and the flags. A run passes when its speedup is within ±TOLERANCE of 1.00x or it
is flagged `noisy` (it said it could not be trusted). Target: 9 of 10.

    .venv/bin/python benchmarks/identical_reference.py [--task examples/elementwise_chain.py]
        [--runs 10] [--tolerance 0.03] [--device cpu] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.bench import Benchmarker, EvalConfig, EvalResult  # noqa: E402

TARGET_PASSING = 0.9  # of the runs


@dataclass
class Run:
    speedup: float | None
    paired_speedup: float | None
    ref_median_ms: float | None
    ref_iqr_ms: float | None
    new_median_ms: float | None
    new_iqr_ms: float | None
    drift: float | None
    external_load: float | None
    noisy: bool
    flags: list[str]
    loadavg_1m: float
    passed: bool
    error: str | None


def identical_candidate(reference_src: str) -> str:
    return reference_src.rstrip() + "\n\n\nclass ModelNew(Model):\n    pass\n"


def one_run(result: EvalResult, tolerance: float) -> Run:
    within = result.speedup is not None and abs(result.speedup - 1.0) <= tolerance
    return Run(
        speedup=result.speedup,
        paired_speedup=result.paired_speedup,
        ref_median_ms=result.ref_ms.median if result.ref_ms else None,
        ref_iqr_ms=result.ref_ms.iqr if result.ref_ms else None,
        new_median_ms=result.new_ms.median if result.new_ms else None,
        new_iqr_ms=result.new_ms.iqr if result.new_ms else None,
        drift=result.drift,
        external_load=result.external_load,
        noisy=result.noisy,
        flags=list(result.flags),
        loadavg_1m=os.getloadavg()[0],
        passed=result.correct and (within or result.noisy),
        error=result.error,
    )


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_run(index: int, run: Run) -> None:
    print(
        f"{index:2d}  speedup {_fmt(run.speedup, '.3f')}x  paired {_fmt(run.paired_speedup, '.3f')}x"
        f"  ref {_fmt(run.ref_median_ms, '.3f')} ± {_fmt(run.ref_iqr_ms, '.3f')} ms"
        f"  new {_fmt(run.new_median_ms, '.3f')} ± {_fmt(run.new_iqr_ms, '.3f')} ms"
        f"  drift {_fmt(run.drift, '.3f')}  load {_fmt(run.external_load, '.2f')} cores"
        f"  loadavg {run.loadavg_1m:.2f}  {'noisy ' if run.noisy else ''}"
        f"{'ok' if run.passed else 'MISS'}" + (f"  error: {run.error}" if run.error else ""),
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", type=Path, default=ROOT / "examples" / "elementwise_chain.py")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--tolerance", type=float, default=0.03)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="default: torch's")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the runs here")
    args = parser.parse_args(argv)
    if args.runs < 1 or not args.tolerance > 0:
        parser.error("--runs must be >= 1 and --tolerance > 0")

    reference = args.task.read_text()
    candidate = identical_candidate(reference)
    config = EvalConfig(device=args.device, num_threads=args.threads)
    runs: list[Run] = []
    started = time.time()
    with (
        tempfile.TemporaryDirectory(prefix="stark-identical-") as cache,
        Benchmarker(cache_dir=Path(cache)) as bench,
    ):
        bench.warm_up()
        for index in range(1, args.runs + 1):
            run = one_run(bench.evaluate(reference, candidate, config), args.tolerance)
            runs.append(run)
            print_run(index, run)
    passed = sum(run.passed for run in runs)
    within = sum(
        run.speedup is not None and abs(run.speedup - 1.0) <= args.tolerance for run in runs
    )
    paired_within = sum(
        run.paired_speedup is not None and abs(run.paired_speedup - 1.0) <= args.tolerance
        for run in runs
    )
    noisy = sum(run.noisy for run in runs)
    loads = [run.external_load for run in runs if run.external_load is not None]
    print(
        f"\n{args.task.name}, {args.device}, {platform.node()}: {passed}/{len(runs)} within "
        f"±{100 * args.tolerance:g}% of 1.00x or flagged noisy (target {TARGET_PASSING:.0%}); "
        f"speedup within ±{100 * args.tolerance:g}%: {within}, paired speedup within: "
        f"{paired_within}, noisy: {noisy}; external load {min(loads, default=0):.2f}-"
        f"{max(loads, default=0):.2f} cores; {time.time() - started:.0f} s"
    )
    if args.json:
        summary = {
            "task": str(args.task),
            "device": args.device,
            "tolerance": args.tolerance,
            "passed": passed,
            "within": within,
            "paired_within": paired_within,
            "noisy": noisy,
            "runs": [asdict(run) for run in runs],
        }
        args.json.write_text(json.dumps(summary, indent=2))
    return 0 if passed >= TARGET_PASSING * len(runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
