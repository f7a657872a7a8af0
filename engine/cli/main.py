"""`stark` command line: one sub-command per feature module.

Each feature owns its parser in its own module (`register(subparsers)`), so the
dispatcher stays small; it is the only module that imports the subcommands, and it loads
each one by name so a missing optional feature drops its command only. Usage errors
(`engine.cli.common.UsageError`) exit 2 with a one-line message.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from engine.cli.common import UsageError

# sub-command name -> module exposing register(subparsers) and run(args) -> int
COMMANDS: dict[str, str] = {
    "bench": "engine.cli.bench",
    "optimize": "engine.cli.optimize",
    "batch": "engine.cli.batch",
    "debug": "engine.cli.debug",
    "trace": "engine.cli.trace",
}


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
