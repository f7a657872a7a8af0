"""Which software produced a verdict: the STARK version and commit, and the torch version.

A recorded verdict is only reproducible against the code that made it; the verify
script compares these with the versions it runs under and warns when they differ.
Everything here is best-effort: a missing git, a non-git install or an absent torch
yields None, never an error.
"""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

import engine

_GIT_TIMEOUT_S = 5.0
# Compared between the record and a rerun; `stark_git_dirty` is informative only.
COMPARED_KEYS = ("stark", "stark_git", "torch")


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def stark_git_state() -> tuple[str | None, bool | None]:
    """(HEAD commit, has uncommitted changes) of the checkout `engine` was imported from;
    (None, None) when it is not a git checkout of this project (e.g. a wheel install
    that happens to sit inside some other repository)."""
    package_dir = Path(engine.__file__).resolve().parent
    top = _git(["rev-parse", "--show-toplevel"], package_dir)
    if not top or Path(top).resolve() != package_dir.parent:
        return None, None
    commit = _git(["rev-parse", "HEAD"], package_dir)
    if not commit:
        return None, None
    status = _git(["status", "--porcelain", "--untracked-files=no"], package_dir)
    return commit, None if status is None else bool(status)


def torch_version() -> str | None:
    """The installed torch's version, read from its metadata (no import of torch)."""
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def environment_versions() -> dict[str, str | bool | None]:
    """Versions of this process's software; cached (the git state is read once)."""
    commit, dirty = stark_git_state()
    return {
        "stark": getattr(engine, "__version__", None),
        "stark_git": commit,
        "stark_git_dirty": dirty,
        "torch": torch_version(),
    }


def version_differences(recorded: dict[str, object], current: dict[str, object]) -> list[str]:
    """`name: recorded -> current` for each compared version that differs; a version the
    record lacks (older trace) or that is unknown now is not a difference."""
    changes = []
    for key in COMPARED_KEYS:
        before, now = recorded.get(key), current.get(key)
        if before is not None and now is not None and before != now:
            changes.append(f"{key}: {before} -> {now}")
    return changes


def describe(versions: dict[str, object]) -> str:
    """One line: `stark 0.1.0 (git 1a2b3c4d, uncommitted changes), torch 2.5.1`."""
    commit = versions.get("stark_git")
    git = f"git {str(commit)[:12]}" if commit else "git unknown"
    if versions.get("stark_git_dirty"):
        git += ", uncommitted changes"
    return (
        f"stark {versions.get('stark') or 'unknown'} ({git}), "
        f"torch {versions.get('torch') or 'unknown'}"
    )
