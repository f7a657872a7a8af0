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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from engine.cli import UsageError, add_tolerance_arguments
from engine.events import (
    BestImproved,
    Event,
    EventFanout,
    JsonlEventWriter,
    LLMCallStarted,
    NodeBenchmarked,
    NodeSelected,
    RoundFinished,
    TaskFinished,
    TaskStarted,
)
from engine.reference import ReferenceError_, check_reference_source, read_reference
from engine.summary import TaskSummary
from engine.taskdir import Redactor, TaskDir, plain_task_id, timestamp, unique_dir

DEFAULT_OUT = "stark_runs"


# --- shared argument groups (batch reuses them) ---------------------------------------------


def add_search_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=None, help="rounds incl. the seed (10)")
    parser.add_argument(
        "--agent",
        choices=("auto", "offline", "openai"),
        default="auto",
        help="offline: embedded deterministic agent; openai: an OpenAI-compatible endpoint; "
        "auto: openai when a key or base URL is configured (default)",
    )
    parser.add_argument("--model", help="model for every role (STARK_*_MODEL set per role)")
    parser.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://host/v1")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--seed", type=int, default=0, help="search and offline-agent seed")
    parser.add_argument("--epsilon", type=float, default=0.35, help="explore probability")
    parser.add_argument("--root-limit", type=int, default=5, help="max children of the root")
    parser.add_argument("--leader-topk", type=int, default=5, help="leaders kept for exploit")
    parser.add_argument("--n-child", type=int, default=3, help="prune after N failed children")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="benchmark time limit per phase (compile, run) in seconds",
    )
    parser.add_argument("--llm-timeout", type=float, default=None, help="per LLM call, seconds")
    parser.add_argument(
        "--context-budget",
        type=int,
        default=24_000,
        help="characters of search history per prompt (the node's own code is never cut)",
    )
    parser.add_argument(
        "--timing-budget",
        type=float,
        default=None,
        help="seconds of adaptive timing per side and evaluation (benchmarker default 4)",
    )
    parser.add_argument(
        "--correctness-trials", type=int, default=None, help="input sets checked per evaluation"
    )
    parser.add_argument(
        "--no-profile",
        action="store_true",
        help="skip the profiler run (the plan prompt then has no profile)",
    )
    parser.add_argument(
        "--profile-timeout",
        type=float,
        default=None,
        help="seconds the profiler may take per evaluation (30); past it the profile is "
        "skipped and the verdict stands",
    )
    add_tolerance_arguments(parser)
    parser.add_argument(
        "--no-compile-baseline",
        action="store_true",
        help="re-measure the best kernel against eager only, not also against torch.compile "
        "(whose Inductor build takes tens of seconds on CPU)",
    )
    parser.add_argument("--json", action="store_true", help="print the final summary as JSON")
    parser.add_argument(
        "--events", choices=("jsonl",), help="stream events as JSON lines on stdout"
    )


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "optimize",
        help="search for a faster kernel for a reference module",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("reference", nargs="?", help="KernelBench-style reference .py file")
    add_search_arguments(parser)
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"runs directory ({DEFAULT_OUT})")
    parser.add_argument("--resume", metavar="TASK_DIR", help="continue a killed run")
    parser.set_defaults(func=run)


# --- helpers ------------------------------------------------------------------------------


def validate_args(args: argparse.Namespace) -> None:
    if args.rounds is not None and args.rounds < 1:
        raise UsageError(f"--rounds must be >= 1, not {args.rounds}")
    if not 0.0 <= args.epsilon <= 1.0:
        raise UsageError(f"--epsilon must be within [0, 1], not {args.epsilon}")
    for flag in ("root_limit", "leader_topk", "n_child"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 1")
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError(f"--timeout must be positive, not {args.timeout}")
    if args.timing_budget is not None and args.timing_budget <= 0:
        raise UsageError(f"--timing-budget must be positive, not {args.timing_budget}")
    if args.profile_timeout is not None and args.profile_timeout <= 0:
        raise UsageError(f"--profile-timeout must be positive, not {args.profile_timeout}")
    if args.correctness_trials is not None and args.correctness_trials < 1:
        raise UsageError(f"--correctness-trials must be >= 1, not {args.correctness_trials}")
    if args.llm_timeout is not None and args.llm_timeout <= 0:
        raise UsageError(f"--llm-timeout must be positive, not {args.llm_timeout}")


def load_reference(path_text: str) -> tuple[Path, str]:
    path = Path(path_text)
    try:
        source = read_reference(path)
        check_reference_source(source, str(path))
    except ReferenceError_ as exc:
        raise UsageError(str(exc)) from None
    return path, source


@dataclass(slots=True)
class AgentSetup:
    agent: Any
    kind: str  # offline | openai (after resolving auto)
    public: dict[str, Any]  # settings without the key, for tree.json
    secrets: list[str | None]
    fallback: str | None = None  # why --agent auto chose the offline agent


def make_agent_setup(
    kind: str,
    seed: int,
    *,
    model: str | None = None,
    base_url: str | None = None,
    llm_timeout: float | None = None,
    role_overrides: dict[str, Any] | None = None,
    preflight: bool = True,
) -> AgentSetup:
    """Resolve settings, build the agent and, for an endpoint, check it answers."""
    from engine.agents.base import AgentError
    from engine.agents.factory import choose_agent
    from engine.agents.settings import AgentSettings, SettingsError

    try:
        settings = AgentSettings.from_env(
            model=model, base_url=base_url, timeout_s=llm_timeout, **(role_overrides or {})
        )
        choice = choose_agent(kind, settings, seed)
    except (SettingsError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    agent, resolved = choice.agent, choice.kind
    fallback = choice.fallback_reason  # set only when `auto` fell back to the offline agent
    if fallback:
        print(f"stark: note: --agent auto: {fallback}", file=sys.stderr)
    if resolved != "offline" and preflight and hasattr(agent, "preflight"):
        try:
            for note in agent.preflight():
                print(f"stark: note: {note}", file=sys.stderr)
        except AgentError as exc:
            raise UsageError(f"endpoint unusable: {exc}") from None
    public = settings.to_public_dict() if resolved != "offline" else {"offline_seed": seed}
    secrets: list[str | None] = [settings.api_key]
    for role in (settings.plan, settings.code, settings.debug):
        if role.base_url:  # a proxy URL may carry credentials: user:password@host
            secrets.append(urlsplit(role.base_url).password)
    return AgentSetup(agent, resolved, public, secrets, fallback)


def role_overrides_from_public(public: dict[str, Any]) -> dict[str, Any]:
    """Per-role model/base URL/temperature saved in tree.json, for a resume."""
    overrides: dict[str, Any] = {}
    for role, values in (public.get("roles") or {}).items():
        for key in ("model", "base_url", "temperature"):
            if values.get(key) is not None:
                overrides[f"{role}_{key}"] = values[key]
    return overrides


def new_task_root(out: Path, stem: str) -> Path:
    return unique_dir(out.resolve() / f"{plain_task_id(stem)}-{timestamp()}")


def build_sinks(args: argparse.Namespace, extra: list[Callable[[Event], None]]) -> EventFanout:
    fanout = EventFanout(*extra)
    if args.events == "jsonl":
        fanout.add(JsonlEventWriter(sys.stdout))
    return fanout


def wants_progress(args: argparse.Namespace) -> bool:
    return not args.json and not args.events and sys.stdout.isatty()


class RichProgress:
    """A terminal progress display fed by the event stream."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = Console(stderr=False)
        self.progress = Progress(
            TextColumn("[bold]{task.fields[name]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=self.console,
        )
        self._tasks: dict[str, Any] = {}
        self.progress.start()

    def __call__(self, event: Event) -> None:
        if isinstance(event, TaskStarted):
            self._tasks[event.task_id] = self.progress.add_task(
                "", total=event.rounds, name=event.task_id, status="starting"
            )
            return
        task = self._tasks.get(event.task_id)
        if task is None:
            return
        if isinstance(event, NodeSelected):
            self.progress.update(
                task,
                status=f"round {event.round}: {event.action} node {event.node_id} ({event.mode})",
            )
        elif isinstance(event, LLMCallStarted):
            self.progress.update(task, status=f"round {event.round}: {event.role} ({event.model})")
        elif isinstance(event, NodeBenchmarked):
            node = event.node
            verdict = f"{node.speedup:.2f}x" if node.runnable else f"failed: {node.error}"
            self.console.print(
                f"  round {event.round}: node {node.id} ({node.phase}) {verdict}"[:200]
            )
        elif isinstance(event, BestImproved):
            self.console.print(f"  [green]best so far: {event.speedup:.2f}x (node {event.node_id})")
        elif isinstance(event, RoundFinished):
            best = f"{event.best_speedup:.2f}x" if event.best_speedup else "-"
            self.progress.update(
                task,
                completed=event.round + 1,
                status=f"best {best} · {event.buggy} buggy of {event.nodes}",
            )

    def close(self) -> None:
        self.progress.stop()


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


# --- the command --------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    validate_args(args)
    if args.resume:
        if args.reference:
            raise UsageError("give either REFERENCE or --resume TASK_DIR, not both")
        return _resume(args)
    if not args.reference:
        raise UsageError("missing REFERENCE (or --resume TASK_DIR)")
    path, source = load_reference(args.reference)
    setup = make_agent_setup(
        args.agent,
        args.seed,
        model=args.model,
        base_url=args.base_url,
        llm_timeout=args.llm_timeout,
    )
    from engine.bench import Benchmarker
    from engine.search import StarkSearch

    config = search_config_from_args(args)
    with Benchmarker() as benchmarker:
        _self_check(benchmarker, source, str(path), args)
        root = new_task_root(Path(args.out), path.stem)
        task = TaskDir(root, plain_task_id(path.stem), Redactor(setup.secrets))
        search = StarkSearch(
            task=task,
            reference_src=source,
            reference_path=str(path.resolve()),
            agent=setup.agent,
            agent_kind=setup.kind,
            agent_public=setup.public,
            config=config,
            benchmarker=benchmarker,
            device=args.device,
            agent_fallback=setup.fallback,
        )
        return _run_search(search, args)


def search_config_from_args(args: argparse.Namespace) -> Any:
    from engine.bench.config import EvalConfig
    from engine.search import SearchConfig

    eval_kwargs: dict[str, Any] = {"device": args.device, "profile": not args.no_profile}
    if args.timeout is not None:
        eval_kwargs.update(compile_timeout_s=args.timeout, run_timeout_s=args.timeout)
    if args.timing_budget is not None:
        eval_kwargs["timing_budget_s"] = args.timing_budget
    if args.correctness_trials is not None:
        eval_kwargs["correctness_trials"] = args.correctness_trials
    if args.profile_timeout is not None:
        eval_kwargs["profile_timeout_s"] = args.profile_timeout
    eval_kwargs.update(atol=args.atol, rtol=args.rtol)
    try:
        return SearchConfig(
            rounds=args.rounds or 10,
            seed=args.seed,
            epsilon=args.epsilon,
            root_limit=args.root_limit,
            leader_topk=args.leader_topk,
            n_child=args.n_child,
            context_budget=args.context_budget,
            compile_baseline=not args.no_compile_baseline,
            eval_config=EvalConfig(**eval_kwargs),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _self_check(benchmarker: Any, source: str, name: str, args: argparse.Namespace) -> None:
    from engine.reference import self_check, self_check_config

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
    from engine.taskdir import find_task_id

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
        return _run_search(search, args)
