"""Fixtures for the language-server tests (helpers live in helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import TINY_REFERENCE


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "tiny_ref.py").write_text(TINY_REFERENCE)
    return root
