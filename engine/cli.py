"""`stark` command line: one sub-command per feature module.

Each feature owns its parser in its own module (`register(subparsers)`), so the
dispatcher stays small. Usage errors exit 2 with a one-line message.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# sub-command name -> module exposing register(subparsers) and run(args) -> int
COMMANDS: dict[str, str] = {
    "bench": "engine.bench.cli",
    "optimize": "engine.optimize_cli",
    "batch": "engine.batch_cli",
    "debug": "engine.debug_cli",
    "trace": "engine.trace.cli",
}


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def positive_tolerance(text: str) -> float:
    """argparse type of --atol/--rtol: a finite number > 0 (argparse then exits 2 with
    one line naming the flag)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


TOLERANCE_HELP = (
    "correctness tolerance: an output element passes when |new - ref| <= atol + rtol * |ref| "
    "(default by dtype: 1e-4 for fp32, 1e-2 for fp16/bf16)"
)


def add_tolerance_arguments(parser: argparse.ArgumentParser) -> None:
    """--atol/--rtol, shared by `stark bench`, `stark optimize` and `stark batch`."""
    parser.add_argument(
        "--atol",
        type=positive_tolerance,
        default=None,
        metavar="X",
        help=f"absolute {TOLERANCE_HELP}",
    )
    parser.add_argument(
        "--rtol",
        type=positive_tolerance,
        default=None,
        metavar="X",
        help=f"relative {TOLERANCE_HELP}",
    )


class _OneLineErrorParser(argparse.ArgumentParser):
    """argparse prints usage + error; a CLI used from editors wants one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrorParser(prog="stark", description="STARK kernel optimizer")
    sub = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMANDS.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # feature not installed in this build
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"stark {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"stark {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # Run the package's copy of main, so its UsageError is the one sub-commands raise.
    from engine.cli import main as _package_main

    sys.exit(_package_main())
