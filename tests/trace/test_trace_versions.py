"""The software versions a verdict is recorded with: best-effort, never failing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import engine
from engine.trace import versions
from engine.trace.versions import describe, environment_versions, version_differences


def test_versions_name_stark_and_torch() -> None:
    found = environment_versions()
    assert found["stark"] == engine.__version__
    assert found["torch"]  # torch is a dependency: its metadata is always there
    repo = Path(engine.__file__).resolve().parent.parent
    if (repo / ".git").exists():
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        assert found["stark_git"] == head
        assert isinstance(found["stark_git_dirty"], bool)


def test_no_git_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_git(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError("git")

    monkeypatch.setattr(versions.subprocess, "run", no_git)
    assert versions.stark_git_state() == (None, None)


def test_differences_and_description() -> None:
    recorded = {"stark": "0.1.0", "stark_git": "a" * 40, "torch": "2.5.0"}
    assert version_differences(recorded, dict(recorded)) == []
    now = {**recorded, "torch": "2.6.0", "stark_git_dirty": True}
    assert version_differences(recorded, now) == ["torch: 2.5.0 -> 2.6.0"]
    # an older record without versions, or an unknown commit now, is no difference
    assert version_differences({}, now) == []
    assert version_differences(recorded, {**recorded, "stark_git": None}) == []
    assert describe(now) == "stark 0.1.0 (git aaaaaaaaaaaa, uncommitted changes), torch 2.6.0"
    assert describe({}) == "stark unknown (git unknown), torch unknown"
