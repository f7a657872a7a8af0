"""The `stark` command line (`main`: the dispatcher; one module per subcommand; `common`
and `progress`: what subcommands share). `from engine.cli import main` is the stable entry
point scripts use, e.g. the language server's reproduction scripts."""

from engine.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
