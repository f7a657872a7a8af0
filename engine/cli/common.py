"""What the `stark` subcommands share: the usage error, argument groups, their checks, and
turning arguments into an agent, an EvalConfig and a SearchConfig.

Subcommands never import each other; whatever two of them need lives here (or in
`engine.cli.progress`), so a change to one command's flags cannot break another's import.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.artifacts.events import Event, EventFanout, JsonlEventWriter
from engine.artifacts.taskdir import plain_task_id, timestamp, unique_dir
from engine.bench.config import EvalConfig
from engine.search import config as defaults
from engine.search.reference import ReferenceError_, check_reference_source, read_reference

if TYPE_CHECKING:
    from engine.agents.factory import AgentSetup

DEFAULT_OUT = "stark_runs"
AGENT_CHOICES = ("auto", "offline", "openai")


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


# --- argument groups ------------------------------------------------------------------------


def tolerance(text: str) -> float:
    """argparse type of --atol/--rtol: a finite number >= 0 (0 is a pure-relative or
    pure-absolute allclose; argparse exits 2 with one line naming the flag otherwise)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < float("inf"):  # NaN fails both comparisons
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def validate_tolerances(args: argparse.Namespace) -> None:
    """--atol 0 with --rtol 0 would demand bit-identical outputs: refused (either alone is
    fine, the other keeps its dtype default)."""
    if getattr(args, "atol", None) == 0 and getattr(args, "rtol", None) == 0:
        raise UsageError("--atol and --rtol cannot both be 0")


TOLERANCE_HELP = (
    "correctness tolerance: an output element passes when |new - ref| <= atol + rtol * |ref| "
    "(default by dtype: 1e-4 for fp32, 1e-2 for fp16/bf16)"
)


def add_tolerance_arguments(parser: argparse.ArgumentParser) -> None:
    """--atol/--rtol, shared by `stark bench`, `stark optimize` and `stark batch`."""
    parser.add_argument(
        "--atol",
        type=tolerance,
        default=None,
        metavar="X",
        help=f"absolute {TOLERANCE_HELP}",
    )
    parser.add_argument(
        "--rtol",
        type=tolerance,
        default=None,
        metavar="X",
        help=f"relative {TOLERANCE_HELP}",
    )


def add_agent_arguments(parser: argparse.ArgumentParser) -> None:
    """--agent/--model/--base-url/--device/--seed: every command that asks an agent."""
    parser.add_argument(
        "--agent",
        choices=AGENT_CHOICES,
        default="auto",
        help="offline: embedded deterministic agent; openai: an OpenAI-compatible endpoint; "
        "auto: openai when a key or base URL is configured (default)",
    )
    parser.add_argument("--model", help="model for every role (STARK_*_MODEL set per role)")
    parser.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://host/v1")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--seed", type=int, default=defaults.SEED, help="search and offline-agent seed"
    )


def add_search_arguments(parser: argparse.ArgumentParser) -> None:
    """The search, agent, benchmark and output flags of `stark optimize` and `stark batch`."""
    parser.add_argument(
        "--rounds", type=int, default=None, help=f"rounds incl. the seed ({defaults.ROUNDS})"
    )
    add_agent_arguments(parser)
    parser.add_argument(
        "--epsilon", type=float, default=defaults.EPSILON, help="explore probability"
    )
    parser.add_argument(
        "--root-limit", type=int, default=defaults.ROOT_LIMIT, help="max children of the root"
    )
    parser.add_argument(
        "--leader-topk", type=int, default=defaults.LEADER_TOPK, help="leaders kept for exploit"
    )
    parser.add_argument(
        "--n-child", type=int, default=defaults.N_CHILD, help="prune after N failed children"
    )
    parser.add_argument(
        "--parallel",
        type=int,
        default=None,
        metavar="K",
        help=f"expansions (agent calls + benchmark) in flight at once ({defaults.PARALLEL}: "
        "one round after another); timings still take turns on the device",
    )
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
        default=defaults.CONTEXT_BUDGET,
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


def add_search_command(subparsers: Any, name: str, *, help: str, description: str) -> Any:
    """The parser of a subcommand that runs searches (`optimize`, `batch`): the search flags
    and `--out`; the caller adds its positional arguments and its own flags."""
    parser = subparsers.add_parser(
        name,
        help=help,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_search_arguments(parser)
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"runs directory ({DEFAULT_OUT})")
    return parser


# --- checks -------------------------------------------------------------------------------


def validate_eval_args(args: argparse.Namespace) -> None:
    """The benchmark and agent limits any command may take (absent flags are skipped)."""
    for flag in ("timeout", "timing_budget", "profile_timeout", "llm_timeout"):
        value = getattr(args, flag, None)
        if value is not None and value <= 0:
            raise UsageError(f"--{flag.replace('_', '-')} must be positive, not {value}")
    trials = getattr(args, "correctness_trials", None)
    if trials is not None and trials < 1:
        raise UsageError(f"--correctness-trials must be >= 1, not {trials}")
    validate_tolerances(args)


def validate_args(args: argparse.Namespace) -> None:
    """The flags of `add_search_arguments`."""
    if args.rounds is not None and args.rounds < 1:
        raise UsageError(f"--rounds must be >= 1, not {args.rounds}")
    if not 0.0 <= args.epsilon <= 1.0:
        raise UsageError(f"--epsilon must be within [0, 1], not {args.epsilon}")
    for flag in ("root_limit", "leader_topk", "n_child"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 1")
    if args.parallel is not None and args.parallel < 1:
        raise UsageError(f"--parallel must be >= 1, not {args.parallel}")
    validate_eval_args(args)


def load_reference(path_text: str) -> tuple[Path, str]:
    """A reference file's path and source, statically checked; a UsageError otherwise."""
    path = Path(path_text)
    try:
        source = read_reference(path)
        check_reference_source(source, str(path))
    except ReferenceError_ as exc:
        raise UsageError(str(exc)) from None
    return path, source


# --- from arguments to objects --------------------------------------------------------------


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
    """Resolve settings, build the agent and, for an endpoint, check it answers. The agent
    modules load only here, so `--help` stays fast."""
    from engine.agents.base import AgentError
    from engine.agents.factory import agent_setup, choose_agent
    from engine.agents.settings import AgentSettings, SettingsError

    try:
        settings = AgentSettings.from_env(
            model=model, base_url=base_url, timeout_s=llm_timeout, **(role_overrides or {})
        )
        choice = choose_agent(kind, settings, seed)
    except (SettingsError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    if choice.fallback_reason:  # set only when `auto` fell back to the offline agent
        print(f"stark: note: --agent auto: {choice.fallback_reason}", file=sys.stderr)
    agent = choice.agent
    if choice.kind != "offline" and preflight and hasattr(agent, "preflight"):
        try:
            for note in agent.preflight():
                print(f"stark: note: {note}", file=sys.stderr)
        except AgentError as exc:
            raise UsageError(f"endpoint unusable: {exc}") from None
    return agent_setup(choice, settings, seed)


def agent_setup_from_args(args: argparse.Namespace, *, preflight: bool = True) -> AgentSetup:
    """The agent the --agent/--model/--base-url/--seed/--llm-timeout flags ask for."""
    return make_agent_setup(
        args.agent,
        args.seed,
        model=args.model,
        base_url=args.base_url,
        llm_timeout=args.llm_timeout,
        preflight=preflight,
    )


def role_overrides_from_public(public: dict[str, Any]) -> dict[str, Any]:
    """Per-role model/base URL/temperature saved in tree.json, for a resume."""
    overrides: dict[str, Any] = {}
    for role, values in (public.get("roles") or {}).items():
        for key in ("model", "base_url", "temperature"):
            if values.get(key) is not None:
                overrides[f"{role}_{key}"] = values[key]
    return overrides


def eval_config_from_args(args: argparse.Namespace) -> EvalConfig:
    """The EvalConfig the flags ask for (absent flags keep the benchmarker's defaults)."""
    values: dict[str, Any] = {"device": args.device}
    if hasattr(args, "no_profile"):
        values["profile"] = not args.no_profile
    if args.timeout is not None:
        values.update(compile_timeout_s=args.timeout, run_timeout_s=args.timeout)
    optional = {
        "timing_budget": "timing_budget_s",
        "correctness_trials": "correctness_trials",
        "profile_timeout": "profile_timeout_s",
        "atol": "atol",
        "rtol": "rtol",
    }
    for flag, name in optional.items():
        if getattr(args, flag, None) is not None:
            values[name] = getattr(args, flag)
    try:
        return EvalConfig(**values)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def search_config_from_args(args: argparse.Namespace) -> defaults.SearchConfig:
    """The SearchConfig of `stark optimize`/`stark batch` flags."""
    eval_config = eval_config_from_args(args)
    try:
        return defaults.SearchConfig(
            rounds=args.rounds or defaults.ROUNDS,
            seed=args.seed,
            epsilon=args.epsilon,
            root_limit=args.root_limit,
            leader_topk=args.leader_topk,
            n_child=args.n_child,
            parallel=args.parallel or defaults.PARALLEL,
            context_budget=args.context_budget,
            compile_baseline=not args.no_compile_baseline,
            eval_config=eval_config,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def new_task_root(out: Path, stem: str) -> Path:
    return unique_dir(out.resolve() / f"{plain_task_id(stem)}-{timestamp()}")


def build_sinks(args: argparse.Namespace, extra: list[Callable[[Event], None]]) -> EventFanout:
    fanout = EventFanout(*extra)
    if args.events == "jsonl":
        fanout.add(JsonlEventWriter(sys.stdout))
    return fanout


def wants_progress(args: argparse.Namespace) -> bool:
    return not args.json and not args.events and sys.stdout.isatty()
