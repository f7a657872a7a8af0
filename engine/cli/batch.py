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

Scale (docs/scale.md): `--workers N` runs tasks in N local worker processes (one per GPU,
or each on its own CPU cores); `--ray ADDRESS` runs one Ray task per STARK task (`auto`: a
running cluster; `local`: start one here; needs `pip install 'stark-kernels[ray]'`).
`--max-concurrent-calls N` / `--requests-per-minute R` limit model calls across all workers.
`--resume RUN_DIR` finishes a killed batch: finished tasks are kept, the others continue
from their tree.json (with --workers or --ray as well).

Exit status: 0 when at least one task produced a result (even one without a correct
kernel), 1 when every task errored (bad reference, failed search), 2 for bad
arguments."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    build_sinks,
    make_agent_setup,
    role_overrides_from_public,
    search_config_from_args,
    validate_args,
    wants_progress,
)
from engine.cli.progress import RichProgress

if TYPE_CHECKING:  # the batch modules load only when a batch runs
    from engine.artifacts.summary import TaskSummary
    from engine.batch.agent_spec import AgentSpec
    from engine.batch.plan import BatchPlan, BatchTask
    from engine.batch.runner import Execution

    # A batch to run: its plan, agent, the tasks to run (None: all) and the finished ones.
    Start = tuple[
        BatchPlan,
        AgentSpec,
        list[BatchTask] | None,
        dict[int, tuple[TaskOutcome, TaskSummary]] | None,
    ]


def register(subparsers: Any) -> None:
    parser = add_search_command(
        subparsers,
        "batch",
        help="optimise many references and report KernelBench metrics",
        description=__doc__ or "",
    )
    parser.add_argument("paths", nargs="*", help="reference files or directories of them")
    parser.add_argument("--sample", type=int, default=None, help="run a seeded sample of K tasks")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="local worker processes, each with its own benchmarker: one per GPU, or each "
        "on its own CPU cores (default 1: every task in this process)",
    )
    parser.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run each task as a Ray task: auto (a running cluster), HOST:PORT, "
        "ray://HOST:10001, or local (start a cluster here); --out must be on a file "
        "system every node shares",
    )
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="finish a killed batch (its saved plan is used)"
    )
    parser.add_argument(
        "--max-concurrent-calls",
        type=int,
        default=None,
        metavar="N",
        help="model calls in flight at once, all workers together (default: no limit)",
    )
    parser.add_argument(
        "--requests-per-minute",
        type=int,
        default=None,
        metavar="R",
        help="model calls started per minute, all workers together (default: no limit)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    validate_args(args)
    execution = _execution(args)
    from engine.batch.runner import BatchDriver

    plan, agent, tasks, finished = (
        _resumed(args, execution) if args.resume else _new(args, execution)
    )
    progress = RichProgress() if wants_progress(args) else None
    sinks = build_sinks(args, [progress] if progress else [])
    quiet = args.json or args.events or progress
    driver = BatchDriver(
        plan, agent, execution, sinks, on_outcome=None if quiet else _print_outcome
    )
    try:
        result = driver.run(tasks, finished)
    except RuntimeError as exc:
        from engine.batch.ray_runner import RayUnavailable

        if isinstance(exc, RayUnavailable):
            raise UsageError(str(exc)) from None
        raise
    finally:
        if progress:
            progress.close()
    if args.json:
        print(json.dumps(result.summary, default=str))
    elif not args.events:
        _print_metrics(result.summary)
    return batch_exit_code(result.outcomes)


def _new(args: argparse.Namespace, execution: Execution) -> Start:
    """A new batch: its plan (saved), its agent, and every task to run."""
    from engine.batch.plan import BatchPlan

    if not args.paths:
        raise UsageError("missing PATHS (or --resume RUN_DIR)")
    try:
        paths = sample_tasks(expand_paths(args.paths), args.sample, args.seed)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    config = search_config_from_args(args)
    _check_placement(execution, args.device)
    setup = make_agent_setup(
        args.agent,
        args.seed,
        model=args.model,
        base_url=args.base_url,
        llm_timeout=args.llm_timeout,
    )
    plan = BatchPlan.create(
        Path(args.out),
        paths,
        config=config,
        agent_kind=setup.kind,
        agent_public=setup.public,
        agent_fallback=setup.fallback,
        device=args.device,
        timeout_s=args.timeout,
        seed=args.seed,
    )
    agent = _agent_spec(args, setup.kind, args.seed, plan.run_dir, None, setup.fallback)
    return plan, agent, None, None


def _resumed(args: argparse.Namespace, execution: Execution) -> Start:
    """A saved batch: its plan, its agent again, the tasks still to run and the finished."""
    from engine.batch.plan import BatchPlanError
    from engine.batch.resume import resume_point

    if args.paths:
        raise UsageError("give either PATHS or --resume RUN_DIR, not both")
    try:
        point = resume_point(args.resume)
    except BatchPlanError as exc:
        raise UsageError(f"--resume: {exc}") from None
    plan = point.plan
    _check_placement(execution, plan.device)
    overrides = (
        None if (args.model or args.base_url) else role_overrides_from_public(plan.agent_public)
    )
    agent = _agent_spec(args, plan.agent_kind, plan.seed, plan.run_dir, overrides)
    if not (args.json or args.events):
        print(
            f"stark batch: resuming {plan.run_dir}: {len(point.finished)} finished, "
            f"{len(point.to_run)} to run ({point.to_continue} from their tree.json)",
            file=sys.stderr,
        )
    return plan, agent, point.to_run, point.finished


def _execution(args: argparse.Namespace) -> Execution:
    from engine.batch.runner import Execution

    if args.workers < 1:
        raise UsageError(f"--workers must be >= 1, not {args.workers}")
    if args.ray and args.workers != 1:
        raise UsageError("give either --workers N or --ray ADDRESS, not both")
    if args.ray:
        from engine.batch.ray_runner import RayUnavailable, import_ray

        try:
            import_ray()
        except RayUnavailable as exc:
            raise UsageError(str(exc)) from None
    for flag in ("max_concurrent_calls", "requests_per_minute"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 1, not {value}")
    return Execution(workers=args.workers, ray_address=args.ray)


def _check_placement(execution: Execution, device: str) -> None:
    """Refuse, before any run directory exists, workers this machine cannot host."""
    if execution.ray_address or execution.workers == 1:
        return
    from engine.batch.placement import PlacementError, plan_slots

    try:
        plan_slots(execution.workers, device)
    except PlacementError as exc:
        raise UsageError(str(exc)) from None


def _agent_spec(
    args: argparse.Namespace,
    kind: str,
    seed: int,
    run_dir: Path,
    role_overrides: dict[str, Any] | None,
    fallback: str | None = None,
) -> AgentSpec:
    """The recipe each worker builds its agent from: the endpoint settings resolved here
    once (checked by a preflight), and the run's shared call limits."""
    from engine.agents.rate_limit import LIMITER_DIR, RateLimits
    from engine.agents.settings import AgentSettings, SettingsError
    from engine.batch.agent_spec import AgentSpec

    settings = None
    if kind != "offline":
        if args.resume:  # the preflight, once, before any worker starts
            make_agent_setup(
                kind,
                seed,
                model=args.model,
                base_url=args.base_url,
                llm_timeout=args.llm_timeout,
                role_overrides=role_overrides,
            )
        try:
            settings = AgentSettings.from_env(
                model=args.model,
                base_url=args.base_url,
                timeout_s=args.llm_timeout,
                **(role_overrides or {}),
            )
        except SettingsError as exc:
            raise UsageError(str(exc)) from None
    limits = RateLimits(args.max_concurrent_calls, args.requests_per_minute)
    return AgentSpec(
        kind=kind,
        seed=seed,
        settings=settings,
        fallback=fallback,
        limits=limits,
        limiter_dir=str(run_dir / LIMITER_DIR),
    )


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
