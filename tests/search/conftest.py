"""Shared fixtures for the search-engine tests: tiny references and the fake endpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes import fake_openai  # noqa: F401 - re-exported fixture

TINY_REFERENCE = """\
import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * 2.0 + 1.0


def get_inputs() -> list[torch.Tensor]:
    return [torch.randn(64, 64)]


def get_init_inputs() -> list:
    return []
"""

# Flags that keep each evaluation short on a loaded 2-core machine (and skip the
# torch.compile re-measurement: an Inductor build takes tens of seconds on CPU).
QUICK = [
    "--timing-budget",
    "0.2",
    "--correctness-trials",
    "2",
    "--no-profile",
    "--no-compile-baseline",
]


@pytest.fixture
def tiny_reference(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_relu.py"
    path.write_text(TINY_REFERENCE)
    return path


# The same chain at 1024²: big enough that a fused kernel beats eager beyond the timing noise,
# for tests that need a real best kernel from the offline agent. At 64² a torch.compile kernel
# can be bit-identical and within noise of eager, which makes it a `baseline` node.
WINNABLE_REFERENCE = TINY_REFERENCE.replace("torch.randn(64, 64)", "torch.randn(1024, 1024)")


@pytest.fixture
def winnable_reference(tmp_path: Path) -> Path:
    path = tmp_path / "relu_1024.py"
    path.write_text(WINNABLE_REFERENCE)
    return path


@pytest.fixture
def clean_agent_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No endpoint configuration leaks in from the developer's environment."""
    for name in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "STARK_API_KEY",
        "STARK_BASE_URL",
        "STARK_MODEL",
        "STARK_MAX_RETRIES",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stark.toml / pyproject.toml agent table
