"""Fixtures for the agent tests: the scripted OpenAI-compatible server."""

import sys
from pathlib import Path

# `tests.fakes` lives at the repository root; `python -m pytest` has it on sys.path,
# a bare `pytest` run may not.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.fakes import fake_openai  # noqa: E402, F401
