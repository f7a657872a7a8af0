"""`stark optimize REFERENCE`: search for a faster kernel for one reference module.

Output: a rich progress display on a terminal; `--events jsonl` streams the typed
events as JSON lines on stdout (docs/events.md); `--json` prints the final summary
object. `--resume TASK_DIR` continues a killed run; a finished run only reports.

After the search, the best kernel is measured again, interleaved against eager and
against torch.compile (`--no-compile-baseline` skips the latter: Inductor builds take
tens of seconds on CPU); the final line reports those fresh figures with both sides'
median ± IQR, e.g. `best 1.31x vs eager (ref 12.1±0.3 ms → 9.2±0.2 ms), 1.02x vs
torch.compile (...)`. A copy of the reference (the offline seed) is never the best.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from engine.artifacts.events import TaskFinished
from engine.artifacts.redact import Redactor
from engine.artifacts.summary import TaskSummary
from engine.artifacts.taskdir import TaskDir, find_task_id, plain_task_id
from engine.cli.common import (
    UsageError,
    add_search_command,
    agent_setup_from_args,
    build_sinks,
    load_reference,
    make_agent_setup,
    new_task_root,
    role_overrides_from_public,
    search_config_from_args,
    validate_args,
    wants_progress,
)
from engine.cli.progress import RichProgress
from engine.search.reference import ReferenceError_, self_check, self_check_config


def register(subparsers: Any) -> None:
    parser = add_search_command(
        subparsers,
        "optimize",
        help="search for a faster kernel for a reference module",
        description=__doc__ or "",
    )
    parser.add_argument("reference", nargs="?", help="KernelBench-style reference .py file")
    parser.add_argument("--resume", metavar="TASK_DIR", help="continue a killed run")
    parser.set_defaults(func=run)


# --- reporting ----------------------------------------------------------------------------


def best_line(summary: TaskSummary) -> str:
    """`best 1.31x vs eager (ref 12.1±0.3 ms → 9.2±0.2 ms), 1.02x vs torch.compile (...)`:
    the re-measured figures, with the search's own figure for comparison."""
    if summary.best_node is None:
        if summary.baseline_nodes:
            return "no correct kernel beyond the reference itself"
        return "no correct kernel found"
    measured = summary.remeasured
    parts = []
    if measured is not None and measured.vs_eager is not None:
        parts.append(measured.vs_eager.text("eager"))
    if measured is not None and measured.vs_compile is not None:
        parts.append(measured.vs_compile.text("torch.compile"))
    head = "best " + (", ".join(parts) if parts else "(not re-measured)")
    if measured is not None and measured.not_faster_than_eager:
        head = (
            f"no kernel faster than eager (best re-measured {', '.join(parts)}); keep the reference"
        )
    notes = [f"node {summary.best_node}"]
    if summary.search_best_speedup is not None:
        notes.append(f"search measured {summary.search_best_speedup:.2f}x")
    if measured is not None and measured.error:
        notes.append(measured.error)
    return f"{head} [{'; '.join(notes)}]"


def print_summary(summary: TaskSummary, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary.to_dict(), default=str))
        return
    calls = f"{summary.llm_calls} LLM calls"
    if summary.agent_calls:
        calls += f", {summary.agent_calls} offline-agent calls"
    copies = summary.baseline_nodes
    baseline = (
        f", {copies} {'copy' if copies == 1 else 'copies'} of the reference" if copies else ""
    )
    print(
        f"{summary.task_id}: {best_line(summary)}; {summary.correct_nodes}/{summary.nodes} "
        f"nodes correct{baseline}; {calls}"
    )
    if summary.best_kernel:
        print(f"best kernel: {summary.best_kernel}")
    print(f"task dir:    {summary.task_dir}")


# --- the command ---------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    validate_args(args)
    if args.resume:
        if args.reference:
            raise UsageError("give either REFERENCE or --resume TASK_DIR, not both")
        return _resume(args)
    if not args.reference:
        raise UsageError("missing REFERENCE (or --resume TASK_DIR)")
    path, source = load_reference(args.reference)
    setup = agent_setup_from_args(args)
    from engine.bench import Benchmarker
    from engine.search import StarkSearch

    config = search_config_from_args(args)
    with Benchmarker() as benchmarker:
        _self_check(benchmarker, source, str(path), args)
        root = new_task_root(Path(args.out), path.stem)
        task = TaskDir(root, plain_task_id(path.stem), Redactor(setup.secrets))
        search = StarkSearch.for_agent(
            setup,
            task=task,
            reference_src=source,
            reference_path=str(path.resolve()),
            config=config,
            benchmarker=benchmarker,
            device=args.device,
        )
        return _run_search(search, args)


def _self_check(benchmarker: Any, source: str, name: str, args: argparse.Namespace) -> None:
    try:
        self_check(benchmarker, source, name, self_check_config(args.device, args.timeout))
    except ReferenceError_ as exc:
        raise UsageError(str(exc)) from None


def _run_search(search: Any, args: argparse.Namespace) -> int:
    progress = RichProgress() if wants_progress(args) else None
    search.events = build_sinks(args, [progress] if progress else [])
    try:
        summary = search.run()
    except Exception as exc:  # noqa: BLE001 - one line for the user, details in search.log
        if progress:
            progress.close()
        print(f"stark optimize: error: {search.task.redact(str(exc))}", file=sys.stderr)
        print(f"stark optimize: details in {search.task.log_path}", file=sys.stderr)
        return 1
    if progress:
        progress.close()
    report_summary(summary, args)
    return 0


def report_summary(summary: TaskSummary, args: argparse.Namespace) -> None:
    """--json: the summary object; --events alone: nothing more (the stream ended with
    task_finished); neither: the human summary."""
    if args.json:
        print_summary(summary, as_json=True)
    elif not args.events:
        print_summary(summary, as_json=False)


def _resume(args: argparse.Namespace) -> int:
    from engine.bench import Benchmarker
    from engine.search import SearchError, StarkSearch

    root = Path(args.resume).resolve()
    if not root.is_dir():
        raise UsageError(f"--resume {root}: not a directory")
    try:
        task_id = find_task_id(root)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    probe = TaskDir(root, task_id)
    try:
        state = probe.load_state()
    except ValueError as exc:
        raise UsageError(f"--resume {root}: unreadable {probe.state_path.name}: {exc}") from None
    if state is None:
        raise UsageError(f"--resume {root}: no tree.json yet (the run died before its seed)")
    try:
        summary = probe.load_summary()
    except ValueError as exc:
        raise UsageError(f"--resume {root}: unreadable {probe.summary_path.name}: {exc}") from None
    wants_more = args.rounds is not None and args.rounds > state["config"]["rounds"]
    if state.get("finished") and summary is not None and not wants_more:
        # Nothing to run: consumers of the event stream still get the task's outcome.
        build_sinks(args, [])(TaskFinished(task_id=task_id, summary=summary.to_dict()))
        report_summary(summary, args)
        return 0
    public = state.get("agent_settings") or {}
    setup = make_agent_setup(
        state["agent"],
        int(state["config"].get("seed", 0)),
        model=args.model,
        base_url=args.base_url,
        llm_timeout=args.llm_timeout,
        role_overrides=None
        if (args.model or args.base_url)
        else role_overrides_from_public(public),
    )
    task = TaskDir(root, task_id, Redactor(setup.secrets))
    with Benchmarker() as benchmarker:
        try:
            search = StarkSearch.resume(
                task, agent=setup.agent, benchmarker=benchmarker, rounds=args.rounds
            )
        except (SearchError, KeyError, ValueError) as exc:
            raise UsageError(f"--resume {root}: {exc}") from None
        if args.no_compile_baseline:  # the saved config's tolerances and timing stay
            search.config.compile_baseline = False
        if args.parallel is not None:  # how many rounds run at once, not what they do
            search.config.parallel = args.parallel
        return _run_search(search, args)
