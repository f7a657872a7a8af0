"""The embedded offline agent: deterministic, well-formed replies, real transformations that
keep the reference's numerics, and a policy that learns from its node's history."""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from engine.agents.base import AgentError, AgentRequest, HistoryItem, Role
from engine.agents.offline import OfflineAgent
from engine.agents.render import render_module
from engine.agents.transforms import (
    ANCHOR_BEGIN,
    ANCHOR_END,
    CATALOGUE,
    analyse_reference,
    header_transforms,
    normalise,
)
from engine.agents.wrapper_diagnosis import diagnose

ELEMENTWISE = """
import torch
import torch.nn as nn
import torch.nn.functional as F


class Model(nn.Module):
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(x * self.scale + 0.25)
        return torch.clamp(y * torch.sigmoid(x), -0.5, 2.0)


def get_inputs():
    return [torch.randn(16, 64)]


def get_init_inputs():
    return [1.5]
"""

CONV = """
from __future__ import annotations

import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        self.head = nn.Linear(channels * 8 * 8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x))
        return self.head(y.view(y.size(0), -1))


def get_inputs():
    return [torch.randn(2, 3, 8, 8)]


def get_init_inputs():
    return [4, 5]


if __name__ == "__main__":
    print(Model(4, 5)(*get_inputs()).shape)
"""


def _request(role: Role, source: str = ELEMENTWISE, **fields: object) -> AgentRequest:
    values: dict[str, object] = {"prompt": "", "round": 1, "reference_src": source}
    values.update(fields)
    return AgentRequest(role=role, **values)  # type: ignore[arg-type]


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def _code(text: str) -> str:
    (block,) = _blocks(text, "python")
    return block


def _load(source: str, tmp_path: Path, name: str) -> ModuleType:
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"stark_test_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _max_error(reference: str, candidate: str, tmp_path: Path) -> float:
    """Build both models after the same seed (as the benchmarker does) and compare."""
    ref = _load(reference, tmp_path, "reference")
    new = _load(candidate, tmp_path, "candidate")
    torch.manual_seed(0)
    inputs = ref.get_inputs()
    torch.manual_seed(1)
    ref_model = ref.Model(*ref.get_init_inputs())
    torch.manual_seed(1)
    new_model = new.ModelNew(*ref.get_init_inputs())
    with torch.no_grad():
        expected = ref_model(*inputs)
        got = new_model(*inputs)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    return float((got - expected).abs().max())


def _seed_code(agent: OfflineAgent, source: str = ELEMENTWISE) -> str:
    return _code(agent.complete(_request(Role.SEED, source, round=0)).text)


# --- format and determinism ---------------------------------------------------------------


def test_same_seed_gives_identical_replies() -> None:
    def replies(seed: int) -> list[str]:
        agent = OfflineAgent(seed)
        seed_code = _seed_code(agent)
        texts = [agent.complete(_request(Role.SEED, round=0)).text]
        for round_ in range(1, 6):
            plan_text = agent.complete(
                _request(Role.PLAN, round=round_, parent_code=seed_code)
            ).text
            plan = json.loads(_blocks(plan_text, "json")[0])
            code = agent.complete(
                _request(Role.CODE, round=round_, parent_code=seed_code, plan=plan)
            ).text
            texts += [plan_text, code]
        return texts

    assert replies(7) == replies(7)


def test_every_role_answers_in_the_parsable_format() -> None:
    agent = OfflineAgent(0)
    seed_code = _seed_code(agent)
    assert header_transforms(seed_code) == []

    plan_reply = agent.complete(_request(Role.PLAN, parent_code=seed_code))
    assert plan_reply.model == "stark-offline"
    (plan_json,) = _blocks(plan_reply.text, "json")
    plan = json.loads(plan_json)
    assert isinstance(plan["title"], str) and plan["title"]
    assert isinstance(plan["steps"], list) and all(isinstance(s, str) for s in plan["steps"])
    assert all(t in CATALOGUE for t in plan["transformations"])
    assert isinstance(plan["rationale"], str)
    anchored = _code(plan_reply.text)
    assert anchored.count(ANCHOR_BEGIN) == anchored.count(ANCHOR_END) >= 1
    without_markers = "\n".join(
        line for line in anchored.splitlines() if line.strip() not in (ANCHOR_BEGIN, ANCHOR_END)
    )
    assert without_markers.strip() == seed_code.strip()

    code = _code(agent.complete(_request(Role.CODE, parent_code=seed_code, plan=plan)).text)
    assert header_transforms(code) == plan["transformations"]
    debug = _code(
        agent.complete(_request(Role.DEBUG, parent_code=code, error_log="RuntimeError: boom")).text
    )
    repair = agent.complete(
        _request(Role.REPAIR, parent_code=seed_code, plan=plan, previous_reply="no code here")
    ).text
    for module in (seed_code, code, debug, _code(repair)):
        tree = ast.parse(module)
        names = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
        assert {"Model", "ModelNew"} <= names
        functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert not functions & {"get_inputs", "get_init_inputs"}


def test_reference_without_model_is_an_agent_error() -> None:
    with pytest.raises(AgentError, match="no class Model"):
        OfflineAgent(0).complete(_request(Role.SEED, "import torch\n"))


# --- generated code keeps the numerics ------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "transforms"),
    [
        (ELEMENTWISE, []),
        (ELEMENTWISE, ["inference_mode"]),
        (ELEMENTWISE, ["bf16_autocast"]),  # autocast leaves pointwise ops in fp32
        (CONV, ["inference_mode"]),
    ],
)
def test_safe_transformations_match_the_reference(
    tmp_path: Path, source: str, transforms: list[str]
) -> None:
    features = analyse_reference(source)
    chosen = normalise(transforms, "cpu", features)
    assert chosen == transforms
    candidate = render_module(source, chosen, title="test")
    assert _max_error(source, candidate, tmp_path) <= 1e-6


def test_channels_last_on_a_conv_net_and_its_repair(tmp_path: Path) -> None:
    """channels_last breaks this model's `.view`; debug must drop it and keep the rest."""
    features = analyse_reference(CONV)
    assert features.has_conv2d
    broken = render_module(CONV, ["inference_mode", "channels_last"], title="t")
    with pytest.raises(RuntimeError, match="view") as caught:
        _max_error(CONV, broken, tmp_path)
    reply = OfflineAgent(0).complete(
        _request(Role.DEBUG, CONV, parent_code=broken, error_log=f"runtime: {caught.value}")
    )
    fixed = _code(reply.text)
    assert header_transforms(fixed) == ["inference_mode"]
    assert _max_error(CONV, fixed, tmp_path) <= 1e-6


def test_channels_last_only_where_there_are_convolutions(tmp_path: Path) -> None:
    assert normalise(["channels_last"], "cpu", analyse_reference(ELEMENTWISE)) == []
    reshape_conv = CONV.replace("y.view(y.size(0), -1)", "y.reshape(y.size(0), -1)")
    candidate = render_module(reshape_conv, ["channels_last"], title="t")
    assert _max_error(reshape_conv, candidate, tmp_path) <= 1e-5


def test_fp16_is_rejected_at_fp32_tolerance_and_debug_reverts_it(tmp_path: Path) -> None:
    candidate = render_module(ELEMENTWISE, ["inference_mode", "fp16"], title="t")
    error = _max_error(ELEMENTWISE, candidate, tmp_path)
    assert error > 1e-4  # what the benchmarker rejects at fp32 tolerance
    log = f"output 0: mismatch, max abs err {error:.3g} exceeds atol=0.0001 rtol=0.0001"
    fixed = _code(
        OfflineAgent(0).complete(_request(Role.DEBUG, parent_code=candidate, error_log=log)).text
    )
    assert header_transforms(fixed) == ["inference_mode"]
    assert _max_error(ELEMENTWISE, fixed, tmp_path) <= 1e-6


def test_torch_compile_variant_matches_the_reference(tmp_path: Path) -> None:
    """One real torch.compile (10-60 s on a small CPU) on a tiny pointwise chain."""
    candidate = render_module(ELEMENTWISE, ["inference_mode", "compile:default"], title="t")
    assert 'torch.compile(self._stark_eager, mode="default", dynamic=False)' in candidate
    assert _max_error(ELEMENTWISE, candidate, tmp_path) <= 1e-5


def test_gpu_only_transformations_are_dropped_on_cpu_and_render_for_cuda() -> None:
    features = analyse_reference(CONV)
    gpu_only = ["cuda_graph", "cudnn_benchmark", "tf32", "compile:reduce-overhead"]
    assert normalise(gpu_only, "cpu", features) == []
    on_gpu = normalise(
        ["cudnn_benchmark", "tf32", "cuda_graph", "compile:default"], "cuda", features
    )
    assert on_gpu == ["compile:default", "cudnn_benchmark", "cuda_graph", "tf32"]
    source = render_module(CONV, on_gpu, title="t")
    compile(source, "candidate.py", "exec")
    assert "torch.cuda.CUDAGraph()" in source and "finally:" in source
    # CUDA graphs and reduce-overhead (which uses graphs itself) never go together
    assert normalise(["cuda_graph", "compile:reduce-overhead"], "cuda", features) == [
        "compile:reduce-overhead"
    ]


def test_backend_flags_are_scoped_to_the_candidates_forward(tmp_path: Path) -> None:
    """cudnn.benchmark / TF32 must not leak into the reference's timing or numerics."""
    before = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32)
    candidate = render_module(CONV, ["cudnn_benchmark", "tf32"], title="t")  # runs on CPU too
    assert _max_error(CONV, candidate, tmp_path) <= 1e-6
    assert (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32) == before


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_variants_match_the_reference_on_gpu(tmp_path: Path) -> None:
    source = CONV.replace("torch.randn(2, 3, 8, 8)", "torch.randn(2, 3, 8, 8, device='cuda')")
    source = source.replace("print(Model(4, 5)", "print(Model(4, 5).cuda()")
    for index, transforms in enumerate(
        (["cudnn_benchmark", "cuda_graph"], ["inference_mode", "cuda_graph"])
    ):
        candidate = render_module(source, transforms, title="t")
        ref = _load(source, tmp_path, f"ref{index}")
        new = _load(candidate, tmp_path, f"new{index}")
        torch.manual_seed(1)
        ref_model = ref.Model(4, 5).cuda()
        torch.manual_seed(1)
        new_model = new.ModelNew(4, 5).cuda()
        for trial in range(3):
            torch.manual_seed(trial)
            (x,) = ref.get_inputs()
            with torch.no_grad():
                assert torch.allclose(new_model(x), ref_model(x), atol=1e-4, rtol=1e-4)


# --- policy -------------------------------------------------------------------------------


def _plan(agent: OfflineAgent, round_: int, parent_code: str, history: list[HistoryItem]) -> dict:
    text = agent.complete(
        _request(Role.PLAN, round=round_, parent_code=parent_code, history=history)
    ).text
    return json.loads(_blocks(text, "json")[0])


def test_plan_avoids_a_transformation_that_failed() -> None:
    seed_code = _seed_code(OfflineAgent(0))
    failed = render_module(
        ELEMENTWISE, ["compile:default"], title="t", meta={"added": ["compile:default"]}
    )
    history = [
        HistoryItem(
            node_id=1, phase="optimize", runnable=False, speedup=None, error="boom", code=failed
        )
    ]
    for seed in range(5):
        for round_ in range(5, 9):  # past the early risk window
            plan = _plan(OfflineAgent(seed), round_, seed_code, history)
            assert "compile:default" not in plan["transformations"]


def test_plan_escalates_what_worked_and_never_repeats_a_tried_set() -> None:
    agent = OfflineAgent(1)
    compiled = render_module(ELEMENTWISE, ["compile:default"], title="t")
    good = HistoryItem(
        node_id=1, phase="optimize", runnable=True, speedup=5.0, plan_summary="compile:default"
    )
    for round_ in range(5, 9):
        plan = _plan(agent, round_, compiled, [good])
        assert plan["transformations"] != ["compile:default"]
        assert any(t.startswith("compile:") for t in plan["transformations"])


def test_plan_rationale_cites_the_profile() -> None:
    seed_code = _seed_code(OfflineAgent(0))
    profile = [
        {"name": "aten::gelu", "self_ms": 3.0, "calls": 1, "percent": 40.0},
        {"name": "aten::mul", "self_ms": 2.0, "calls": 2, "percent": 30.0},
    ]
    text = (
        OfflineAgent(0)
        .complete(_request(Role.PLAN, round=5, parent_code=seed_code, profile=profile))
        .text
    )
    plan = json.loads(_blocks(text, "json")[0])
    assert any(t.startswith("compile:") for t in plan["transformations"])
    assert "2 separate pointwise kernels, top aten::gelu (40% of the time)" in plan["rationale"]


def test_plans_on_cpu_never_use_gpu_only_transformations() -> None:
    seed_code = _seed_code(OfflineAgent(0), CONV)
    for seed in range(4):
        agent = OfflineAgent(seed)
        for round_ in range(1, 8):
            plan = _plan(agent, round_, seed_code, [])
            assert all("cuda" in CATALOGUE[t].devices for t in plan["transformations"])
            assert all("cpu" in CATALOGUE[t].devices for t in plan["transformations"])


def test_plan_looks_two_steps_ahead_when_every_single_step_was_tried() -> None:
    agent = OfflineAgent(2)
    features = analyse_reference(ELEMENTWISE)
    parent = render_module(ELEMENTWISE, ["compile:default"], title="t")
    singles = [
        ["inference_mode", "compile:default"],
        ["compile:max-autotune-no-cudagraphs"],
        ["compile:default", "bf16_autocast"],
        ["compile:default", "fp16"],
        [],
    ]
    history = [
        HistoryItem(i, "optimize", True, 1.0, code=render_module(ELEMENTWISE, s, title="t"))
        for i, s in enumerate(singles)
    ]
    plan = _plan(agent, 9, parent, history)
    tried = [normalise(s, "cpu", features) for s in singles] + [["compile:default"]]
    assert plan["transformations"] not in tried
    assert len(plan["transformations"]) >= 1


def _simulated_verdict(transforms: list[str]) -> tuple[bool, float | None, str | None]:
    """Stand-in for the benchmarker: precision variants fail at fp32 tolerance."""
    if any(CATALOGUE[t].risky for t in transforms):
        return False, None, "output 0: mismatch, max abs err 0.003 exceeds atol=0.0001"
    gain = {"compile:default": 1.5, "compile:max-autotune-no-cudagraphs": 1.6}
    log_speedup = sum(gain.get(t, 0.05) for t in transforms)
    return True, math.exp(log_speedup), None


@pytest.mark.parametrize("seed", range(6))
def test_short_runs_find_compile_and_debug_only_real_failures(seed: int) -> None:
    """A 6-round greedy loop: the agent reaches torch.compile, and any buggy node it gets is
    one the simulated verdict really failed, which the debug step then repairs."""
    agent = OfflineAgent(seed)
    root = _seed_code(agent)
    nodes: list[dict] = [{"code": root, "runnable": True, "speedup": 1.0, "parent": None}]
    for round_ in range(1, 7):
        buggy = [i for i, n in enumerate(nodes) if not n["runnable"] and not n.get("debugged")]
        if buggy:
            index = buggy[0]
            nodes[index]["debugged"] = True
            reply = agent.complete(
                _request(
                    Role.DEBUG,
                    round=round_,
                    parent_code=nodes[index]["code"],
                    error_log=nodes[index]["error"],
                )
            )
        else:
            index = max(
                (i for i, n in enumerate(nodes) if n["runnable"]), key=lambda i: nodes[i]["speedup"]
            )
            history = [
                HistoryItem(
                    i, "optimize", n["runnable"], n["speedup"], code=n["code"], error=n.get("error")
                )
                for i, n in enumerate(nodes)
                if n["parent"] == index
            ]
            plan = _plan(agent, round_, nodes[index]["code"], history)
            reply = agent.complete(
                _request(Role.CODE, round=round_, parent_code=nodes[index]["code"], plan=plan)
            )
        code = _code(reply.text)
        transforms = header_transforms(code) or []
        ok, speedup, error = _simulated_verdict(transforms)
        nodes.append(
            {"code": code, "runnable": ok, "speedup": speedup, "parent": index, "error": error}
        )
        if buggy:  # a debug step reverts the real cause, so its fix runs
            assert ok, (seed, round_, transforms)
    best = max((n for n in nodes if n["runnable"]), key=lambda n: n["speedup"])
    assert any(t.startswith("compile:") for t in header_transforms(best["code"]) or [])


def test_diagnose_reverts_the_right_transformation() -> None:
    fixed, _ = diagnose(
        "torch._inductor.exc.InductorError: C++ compile error",
        ["inference_mode", "compile:max-autotune-no-cudagraphs"],
        [],
    )
    assert fixed == ["inference_mode", "compile:default"]
    fixed, _ = diagnose("BackendCompilerFailed: inductor", ["compile:default"], [])
    assert fixed == []
    fixed, _ = diagnose("something odd", ["inference_mode", "compile:default"], ["inference_mode"])
    assert fixed == ["compile:default"]
    fixed, _ = diagnose("anything", [], [])
    assert fixed == []


def test_forward_ops_counts_calls_and_operators_not_only_pointwise_ones() -> None:
    from engine.agents.transforms import analyse_reference

    reference = (
        "import torch\n\n\nclass Model(torch.nn.Module):\n"
        "    def forward(self, x, w):\n"
        "        y = torch.matmul(x, w)\n"  # one call (not pointwise)
        "        return -torch.relu(y) * 2\n"  # one call, one unary op, one binary op
    )
    features = analyse_reference(reference)
    assert features.forward_ops == 4
    assert not hasattr(features, "pointwise_ops")
    assert "4 ops in forward" in str(features)
