"""The shared vocabulary of the server's features: the error a bad request raises,
file URIs, the command names, and the last verdict of a kernel with its trace links.
It imports no feature, so every feature can import it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pygls.uris import from_fs_path, to_fs_path

from engine.bench.result import EvalResult
from stark_lsp.diagnostics import RelatedFile

# `workspace/executeCommand` names (the VS Code extension and docs/lsp.md use these).
OPTIMIZE = "stark.optimize"
DEBUG = "stark.debug"
VERIFY = "stark.verify"
CANCEL = "stark.cancel"
APPLY_BEST = "stark.applyBest"
APPLY_FIX = "stark.applyFix"
JOBS = "stark.jobs"
WATCH = "stark.watch"
UNWATCH = "stark.unwatch"
SERVER_INFO = "stark.serverInfo"


class UserError(Exception):
    """Bad input from the client; becomes a JSON-RPC error with this message."""


@dataclass(slots=True)
class Verdict:
    """The last verdict known for one kernel file, and where it came from."""

    result: EvalResult
    job_id: str
    node_id: int | None
    files: list[RelatedFile] = field(default_factory=list)
    reference: Path | None = None


def uri_to_path(uri: Any) -> Path:
    """A file URI as an absolute path, or a UserError that says what is wrong."""
    if not isinstance(uri, str) or not uri:
        raise UserError(f"uri must be a non-empty string, not {uri!r}")
    if not uri.startswith("file:"):
        scheme = uri.split(":", 1)[0] if ":" in uri else uri
        raise UserError(
            f"only file:// URIs are supported, not {scheme!r} ({uri}); save the file first"
        )
    fs_path = to_fs_path(uri)
    if not fs_path:
        raise UserError(f"cannot turn {uri!r} into a file path")
    return Path(fs_path).resolve()


def path_to_uri(path: Path) -> str:
    return from_fs_path(str(path)) or path.as_uri()


def trace_links(paths: list[Path]) -> list[RelatedFile]:
    """Label trace files by what they hold (names from engine/trace)."""
    links: list[RelatedFile] = []
    for path in paths:
        name = path.name
        if name.endswith(("log.txt", ".log")):
            label = "full verification log"
        elif name.startswith("verify_") and name.endswith(".py"):
            label = "standalone verify script"
        elif name.endswith("profile.txt"):
            label = "profile"
        elif path.parent.name.endswith("_verify"):
            label = (
                "candidate as verified" if path.stem.endswith("_new") else "reference as verified"
            )
        elif name.endswith("prompt.txt"):
            label = "prompt"
        elif name.endswith("result.txt"):
            label = "agent reply"
        else:
            label = name
        links.append(RelatedFile(path, label))
    return links
