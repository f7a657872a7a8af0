"""The tree search driving the offline kernel writer end to end: real capture, real C++
builds (load_inline), the real benchmarker. The best kernel is generated C++, and the
summary says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.agents.offline import OfflineAgent
from engine.agents.transforms import read_header
from engine.artifacts.taskdir import TaskDir
from engine.bench import Benchmarker, EvalConfig
from engine.search import SearchConfig, StarkSearch

ROUNDS = 3
# relu(x) * 2 + 1 over 1024 x 1024 plus a row softmax: three eager passes fused into one
CHAIN = """\
import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * 2.0 + 1.0


def get_inputs() -> list[torch.Tensor]:
    return [torch.randn(1024, 1024)]


def get_init_inputs() -> list:
    return []
"""


@pytest.mark.slow
def test_the_search_finds_a_generated_cpp_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    reference = tmp_path / "chain.py"
    reference.write_text(CHAIN)
    config = SearchConfig(
        rounds=ROUNDS,
        seed=0,
        compile_baseline=False,
        eval_config=EvalConfig(device="cpu", timing_budget_s=0.3, correctness_trials=2),
    )
    with Benchmarker() as benchmarker:
        summary = StarkSearch(
            task=TaskDir(tmp_path / "run", reference.stem),
            reference_src=CHAIN,
            reference_path=str(reference),
            agent=OfflineAgent(0, kernels=True),
            agent_kind="offline",
            agent_public={"offline_seed": 0},
            config=config,
            benchmarker=benchmarker,
            device="cpu",
        ).run()

    nodes = json.loads((tmp_path / "run" / "tree.json").read_text())["tree"]["nodes"]
    first = nodes[1]
    plan = json.loads(first["plan_json"])
    assert plan["move"] == {"kind": "fuse", "group": "g0"}
    assert plan["groups"][0]["ops"] == "relu -> mul -> add"
    assert first["phase"] == "optimize" and first["error"] in (None, "")
    code = Path(first["code_path"]).read_text()
    assert "load_inline" in code and read_header(code)["kernel"]["fused"] == ["g0"]
    # every round produced a new kernel: two schedules of one fusion are two nodes
    kernels = [read_header(Path(n["code_path"]).read_text()).get("kernel") for n in nodes[1:]]
    assert len({json.dumps(k, sort_keys=True) for k in kernels}) == len(kernels)

    assert summary.correct and summary.correct_nodes == ROUNDS
    assert summary.best_node != 0 and summary.best_generated == ["cpp"]
    best = (tmp_path / "run" / "best_kernel.py").read_text()
    assert "_STARK_CPP_SOURCE" in best and "class ModelNew" in best
