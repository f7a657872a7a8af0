"""`stark batch PATHS...`: optimise many references (KernelBench problem files run
unchanged; directories expand to their *.py files) into one timestamped run
directory, with per-task results and the KernelBench metrics in summary.json.

Each task's id (in events and file names) is its file stem with characters outside
[A-Za-z0-9_-] turned into `_` and leading/trailing `_`/`-` dropped (no hash suffix:
`12_Matmul_with_diagonal_matrices_.py` is task `12_Matmul_with_diagonal_matrices`),
suffixed `-2`, `-3`, ... when two references give the same id; its directory in the
run is `NNN_<id>` (NNN: its position in the batch).

After each task its best kernel is measured again, interleaved against eager and
against torch.compile (`--no-compile-baseline`: eager only). fast_p and the geomeans
use those re-measured speedups; `wins_beyond_iqr` counts the wins whose two sides'
IQRs lie apart. A copy of the reference never counts as a task's kernel.

Exit status: 0 when at least one task produced a result (even one without a correct
kernel), 1 when every task errored (bad reference, failed search), 2 for bad
arguments."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from engine.batch.metrics import (
    FAST_P_THRESHOLDS,
    TaskOutcome,
    batch_exit_code,
    expand_paths,
    sample_tasks,
)
from engine.cli.common import (
    UsageError,
    add_search_command,
    agent_setup_from_args,
    build_sinks,
    search_config_from_args,
    validate_args,
    wants_progress,
)
from engine.cli.progress import RichProgress


def register(subparsers: Any) -> None:
    parser = add_search_command(
        subparsers,
        "batch",
        help="optimise many references and report KernelBench metrics",
        description=__doc__ or "",
    )
    parser.add_argument("paths", nargs="+", help="reference files or directories of them")
    parser.add_argument("--sample", type=int, default=None, help="run a seeded sample of K tasks")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    validate_args(args)
    try:
        paths = sample_tasks(expand_paths(args.paths), args.sample, args.seed)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    setup = agent_setup_from_args(args)
    config = search_config_from_args(args)
    from engine.batch.runner import BatchRun
    from engine.bench import Benchmarker

    batch = BatchRun.create(
        Path(args.out),
        paths,
        setup=setup,
        config=config,
        device=args.device,
        timeout_s=args.timeout,
        seed=args.seed,
    )
    progress = RichProgress() if wants_progress(args) else None
    sinks = build_sinks(args, [progress] if progress else [])
    quiet = args.json or args.events or progress
    try:
        with Benchmarker() as benchmarker:
            result = batch.run(benchmarker, sinks, on_outcome=None if quiet else _print_outcome)
    finally:
        if progress:
            progress.close()
    if args.json:
        print(json.dumps(result.summary, default=str))
    elif not args.events:
        _print_metrics(result.summary)
    return batch_exit_code(result.outcomes)


def _print_outcome(outcome: TaskOutcome) -> None:
    if outcome.error:
        verdict = f"ERROR {outcome.error}"
    elif outcome.correct:
        measured = outcome.remeasured
        parts = [
            c.text(name)
            for name, c in (
                ("eager", measured.vs_eager if measured else None),
                ("torch.compile", measured.vs_compile if measured else None),
            )
            if c is not None
        ]
        verdict = ", ".join(parts) or "not re-measured"
        if measured is not None and measured.not_faster_than_eager:
            verdict = (
                f"no kernel faster than eager (best re-measured {verdict}); keep the reference"
            )
        if measured is not None and measured.error:
            verdict += f" [{measured.error}]"
    elif outcome.baseline_nodes:
        verdict = "no correct kernel beyond the reference itself"
    else:
        verdict = "no correct kernel"
    print(f"{outcome.task}: {verdict}", file=sys.stderr)


def _print_metrics(summary: dict[str, Any]) -> None:
    metrics = summary["metrics"]

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}x"

    fast = ", ".join(f"fast_{p:g} {metrics[f'fast_{p:g}']:.2f}" for p in FAST_P_THRESHOLDS)
    print(
        f"{metrics['correct_tasks']}/{metrics['tasks']} tasks correct; re-measured vs eager: "
        f"mean {fmt(metrics['mean_speedup'])}, "
        f"geomean {fmt(metrics['geomean_speedup'])} (correct tasks), "
        f"geomean {fmt(metrics['geomean_speedup_all'])} (all, failures and slower kernels "
        f"as 1x); {fast} (p >= 1: wins beyond IQR only; point estimate fast_1 "
        f"{metrics['fast_1_point']:.2f})"
    )
    if metrics["compile_measured_tasks"]:
        print(
            f"vs torch.compile ({metrics['compile_measured_tasks']} tasks): geomean "
            f"{fmt(metrics['geomean_speedup_vs_compile'])}, fast_1 "
            f"{metrics['fast_1_vs_compile']:.2f} beyond IQR (point estimate "
            f"{metrics['fast_1_vs_compile_point']:.2f})"
        )
    print(
        f"search's own figures (max over noisy timings): geomean {fmt(metrics['search_geomean_speedup'])}"
    )
    print(f"run dir: {summary['run_dir']}")
