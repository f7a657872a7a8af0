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

from engine.batch import (
    FAST_P_THRESHOLDS,
    TaskOutcome,
    batch_exit_code,
    expand_paths,
    outcome_from_summary,
    sample_tasks,
    summarize,
    unique_task_ids,
)
from engine.cli import UsageError
from engine.optimize_cli import (
    DEFAULT_OUT,
    RichProgress,
    add_search_arguments,
    build_sinks,
    make_agent_setup,
    search_config_from_args,
    validate_args,
    wants_progress,
)
from engine.reference import (
    ReferenceError_,
    check_reference_source,
    read_reference,
    self_check,
    self_check_config,
)
from engine.taskdir import (
    Redactor,
    TaskDir,
    atomic_write_text,
    timestamp,
    unique_dir,
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "batch",
        help="optimise many references and report KernelBench metrics",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", help="reference files or directories of them")
    parser.add_argument("--sample", type=int, default=None, help="run a seeded sample of K tasks")
    add_search_arguments(parser)
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"runs directory ({DEFAULT_OUT})")
    parser.set_defaults(func=run)


def _run_dir(out: Path) -> Path:
    root = unique_dir(out.resolve() / f"batch-{timestamp()}")
    root.mkdir(parents=True)
    return root


def _write_summary(run_dir: Path, header: dict[str, Any], outcomes: list[TaskOutcome]) -> dict:
    summary = {
        **header,
        "tasks": [o.to_dict() for o in outcomes],
        "metrics": summarize(outcomes),
    }
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2, default=str))
    return summary


def run(args: argparse.Namespace) -> int:
    validate_args(args)
    try:
        paths = sample_tasks(expand_paths(args.paths), args.sample, args.seed)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    setup = make_agent_setup(
        args.agent,
        args.seed,
        model=args.model,
        base_url=args.base_url,
        llm_timeout=args.llm_timeout,
    )
    config = search_config_from_args(args)
    run_dir = _run_dir(Path(args.out))
    header = {
        "run_dir": str(run_dir),
        "agent": setup.kind,
        "rounds": config.rounds,
        "seed": args.seed,
        "device": args.device,
        "atol": config.eval_config.atol,
        "rtol": config.eval_config.rtol,
        "compile_baseline": config.compile_baseline,
        "agent_fallback": setup.fallback,
        "references": [str(p) for p in paths],
    }
    progress = RichProgress() if wants_progress(args) else None
    sinks = build_sinks(args, [progress] if progress else [])
    outcomes: list[TaskOutcome] = []
    from engine.bench import Benchmarker
    from engine.search import StarkSearch

    task_ids = unique_task_ids(paths)
    try:
        with Benchmarker() as benchmarker:
            for index, (path, task_id) in enumerate(zip(paths, task_ids, strict=True)):
                name = f"{index:03d}_{task_id}"
                outcome = _run_one(
                    name,
                    task_id,
                    path,
                    run_dir / name,
                    setup,
                    config,
                    benchmarker,
                    sinks,
                    args,
                    StarkSearch,
                )
                outcomes.append(outcome)
                _write_summary(run_dir, header, outcomes)
                if not args.json and not args.events and not progress:
                    _print_outcome(outcome)
    finally:
        if progress:
            progress.close()
    summary = _write_summary(run_dir, header, outcomes)
    if args.json:
        print(json.dumps(summary, default=str))
    elif not args.events:
        _print_metrics(summary)
    return batch_exit_code(outcomes)


def _run_one(
    name: str,
    task_id: str,
    path: Path,
    root: Path,
    setup: Any,
    config: Any,
    benchmarker: Any,
    sinks: Any,
    args: argparse.Namespace,
    search_cls: Any,
) -> TaskOutcome:
    """One task; a bad reference or a failed search is recorded, never fatal to the batch."""
    try:
        source = read_reference(path)
        check_reference_source(source, str(path))
        self_check(benchmarker, source, str(path), self_check_config(args.device, args.timeout))
    except ReferenceError_ as exc:
        return TaskOutcome(name, str(path), None, False, None, error=str(exc))
    task = TaskDir(root, task_id, Redactor(setup.secrets))
    search = search_cls(
        task=task,
        reference_src=source,
        reference_path=str(path),
        agent=setup.agent,
        agent_kind=setup.kind,
        agent_public=setup.public,
        config=config,
        benchmarker=benchmarker,
        events=sinks,
        device=args.device,
        agent_fallback=setup.fallback,
    )
    try:
        summary = search.run()
    except Exception as exc:  # noqa: BLE001 - the batch goes on; details in the task's log
        return TaskOutcome(name, str(path), str(root), False, None, error=task.redact(str(exc)))
    return outcome_from_summary(name, str(path), summary)


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
        f"geomean {fmt(metrics['geomean_speedup_all'])} (all, failures as 1x); {fast} "
        f"({metrics['wins_beyond_iqr']} wins beyond IQR)"
    )
    if metrics["compile_measured_tasks"]:
        print(
            f"vs torch.compile ({metrics['compile_measured_tasks']} tasks): geomean "
            f"{fmt(metrics['geomean_speedup_vs_compile'])}, fast_1 "
            f"{metrics['fast_1_vs_compile']:.2f} ({metrics['wins_beyond_iqr_vs_compile']} "
            "wins beyond IQR)"
        )
    print(
        f"search's own figures (max over noisy timings): geomean {fmt(metrics['search_geomean_speedup'])}"
    )
    print(f"run dir: {summary['run_dir']}")
