"""`stark bench [REFERENCE] CANDIDATE`: evaluate one candidate against its reference.

Exit status 0 whenever an evaluation was carried out, whatever its verdict (an
incorrect or crashing candidate is a result, not an error); 2 for usage errors,
always as one line on stderr.
With --json, stdout carries exactly one strict JSON object (EvalResult.to_json()).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path
from typing import Any, NoReturn, TextIO

from engine.bench.config import EvalConfig
from engine.bench.evaluate import Benchmarker
from engine.bench.result import EvalResult
from engine.cli.common import UsageError, add_tolerance_arguments, validate_tolerances

# A candidate may name its reference in a leading comment, so `stark bench CANDIDATE` works.
REFERENCE_HEADER = re.compile(r"^#\s*stark:\s*reference\s*=\s*(\S+)\s*$", re.MULTILINE)
HEADER_LINES = 5
LOG_LINES_ON_FAILURE = 25

USAGE = (
    "stark bench [REFERENCE] CANDIDATE [--device auto|cpu|cuda] [--json]\n"
    "                   [--correctness-trials N] [--timing-trials N] [--threads N]\n"
    "                   [--timeout SECONDS] [--compile-timeout SECONDS] [--atol X] [--rtol X]\n"
    "                   [--timing-budget SECONDS] [--profile] [--profile-timeout SECONDS]\n"
    "                   [--keep-workdir]"
)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive, finite number of seconds: {text}")
    return value


def _one_line_error(prog: str) -> Any:
    """argparse prints the whole usage on error; a usage error here is one line."""

    def error(message: str) -> NoReturn:
        print(f"{prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)

    return error


def register(subparsers: Any) -> None:
    defaults = EvalConfig()
    parser = subparsers.add_parser(
        "bench",
        usage=USAGE,
        help="evaluate a candidate kernel against a reference task",
        description=(
            "Check a candidate ModelNew against a reference Model (KernelBench format) for "
            "correctness and speed, in an isolated worker process. If REFERENCE is omitted, "
            "the candidate must start with a '# stark: reference=PATH' comment."
        ),
    )
    parser.error = _one_line_error(parser.prog)  # type: ignore[method-assign]
    parser.add_argument("paths", nargs="*", metavar="FILE", help="[REFERENCE] CANDIDATE")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--correctness-trials",
        type=_positive_int,
        default=defaults.correctness_trials,
        metavar="N",
        help="trials with fresh random inputs (default: %(default)s)",
    )
    parser.add_argument(
        "--timing-trials",
        type=_positive_int,
        default=None,
        metavar="N",
        help=(
            "fixed number of timed calls per side (default: adaptive, at least "
            f"{defaults.min_timing_trials} and at most {defaults.max_timing_trials}, until "
            f"IQR/median < {defaults.noise_target:g} or {defaults.timing_budget_s:g} s per side)"
        ),
    )
    seconds_options = (
        ("--timeout", defaults.run_timeout_s, "limit for running the candidate"),
        (
            "--compile-timeout",
            defaults.compile_timeout_s,
            "limit for importing it, load_inline builds included",
        ),
        (
            "--timing-budget",
            defaults.timing_budget_s,
            "seconds per side the adaptive timing may spend",
        ),
        (
            "--profile-timeout",
            defaults.profile_timeout_s,
            "limit for --profile; a profile that runs over is skipped",
        ),
    )
    for flag, default, meaning in seconds_options:
        parser.add_argument(
            flag,
            type=_positive_seconds,
            default=default,
            metavar="SECONDS",
            help=f"{meaning} (default: %(default)s)",
        )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        metavar="N",
        help="torch threads for both sides (default: torch's)",
    )
    add_tolerance_arguments(parser)
    parser.add_argument("--profile", action="store_true", help="add the candidate's top operators")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the worker's files")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(func=run)


def read_source(path: Path, role: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{role} file not found: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"{role} is a directory, not a Python file: {path}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{role} file is not UTF-8 text: {path}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {role} file {path}: {exc.strerror or exc}") from None


def declared_reference(candidate: Path, source: str) -> Path | None:
    """The `# stark: reference=PATH` header, resolved relative to the candidate."""
    head = "\n".join(source.splitlines()[:HEADER_LINES])
    match = REFERENCE_HEADER.search(head)
    return (candidate.parent / match.group(1)) if match else None


def resolve_paths(paths: list[str]) -> tuple[Path, Path, str, str]:
    """(reference, candidate, reference_src, candidate_src) or a UsageError."""
    if not 1 <= len(paths) <= 2:
        raise UsageError(f"expected [REFERENCE] CANDIDATE, got {len(paths)} files")
    candidate = Path(paths[-1])
    candidate_src = read_source(candidate, "candidate")
    if len(paths) == 2:
        reference = Path(paths[0])
    else:
        found = declared_reference(candidate, candidate_src)
        if found is None:
            raise UsageError(
                f"no REFERENCE given and {candidate} has no '# stark: reference=PATH' header"
            )
        reference = found
    return reference, candidate, read_source(reference, "reference"), candidate_src


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    validate_tolerances(args)
    try:
        return EvalConfig(
            device=args.device,
            correctness_trials=args.correctness_trials,
            timing_trials=args.timing_trials,
            run_timeout_s=args.timeout,
            compile_timeout_s=args.compile_timeout,
            timing_budget_s=args.timing_budget,
            profile_timeout_s=args.profile_timeout,
            num_threads=args.threads,
            atol=args.atol,
            rtol=args.rtol,
            profile=args.profile,
            keep_workdir=args.keep_workdir,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def human_report(result: EvalResult, log_lines: int = LOG_LINES_ON_FAILURE) -> str:
    """EvalResult.summary() plus what a person needs next: where it failed, the
    compiler/runtime output on failure, the profile, and where the time went."""
    lines = [result.summary()]
    if result.error_location is not None:
        where = f" in {result.error_location.function}" if result.error_location.function else ""
        lines.append(f"  at candidate line {result.error_location.line}{where}")
    if "untrusted_timing" in result.flags:
        lines.append(
            "  speedup withheld: the candidate imports the harness or inspects its stack frames,"
            " so the timing it reports can't be trusted (correctness was still checked)"
        )
    if "cache_tampered" in result.flags:
        lines.append("  the compile cache had been tampered with; affected extensions were rebuilt")
    if result.correctness_trials:
        lines.append(f"  trials passed: {result.trials_passed}/{result.correctness_trials}")
    spent = [
        f"{label} {value:.2f} s"
        for label, value in (
            ("compile", result.compile_s),
            ("kernels", result.kernel_s),
            ("harness", result.harness_overhead_s),
            ("total", result.total_s),
        )
        if value is not None
    ]
    if spent:
        lines.append(f"  time: {', '.join(spent)}")
    if result.profile:
        lines.append("  profile (candidate, by self time):")
        for entry in result.profile:
            lines.append(
                f"    {entry.percent:5.1f}%  {entry.self_ms:9.3f} ms  "
                f"x{entry.calls:<5d} {entry.name}"
            )
    if not result.runnable and result.log.strip():
        tail = result.log.strip().splitlines()[-log_lines:]
        lines.append(f"  log (last {len(tail)} lines):")
        lines.extend(f"    {line}" for line in tail)
    return "\n".join(lines)


def _progress(stream: TextIO, label: str) -> Any:
    """A spinner on an interactive stderr; nothing when piped."""
    if not stream.isatty():
        return nullcontext()
    from rich.console import Console

    return Console(file=stream).status(label)


def run(args: argparse.Namespace) -> int:
    reference, candidate, reference_src, candidate_src = resolve_paths(args.paths)
    config = config_from_args(args)
    work_root = Path(tempfile.mkdtemp(prefix="stark-bench-")) if config.keep_workdir else None
    with (
        Benchmarker(work_root=work_root) as bench,
        _progress(sys.stderr, f"evaluating {candidate.name} against {reference.name}"),
    ):
        result = bench.evaluate(reference_src, candidate_src, config)
    if work_root is not None:
        print(f"stark bench: worker files kept in {work_root}", file=sys.stderr)
    text = result.to_json() if args.json else human_report(result)
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `stark bench ... | head -1`: the reader has gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # quiet exit flush
    return 0  # an evaluation was carried out; the verdict is in the output
