"""The offline agent as a kernel writer, role by role, on real references (real fx capture,
no builds): its plan names the fusion groups and a move, its code is a `ModelNew` module
with generated C++, its debug step reads a compiler error's line, and an uncapturable model
falls back to the wrappers with the reason recorded."""

from __future__ import annotations

import re

import pytest

from engine.agents.base import AgentRequest, HistoryItem, Role
from engine.agents.offline import OfflineAgent
from engine.agents.transforms import read_header
from engine.search.parsing import parse_code_reply, parse_plan_reply
from tests.agents.kernels.refs import ref_source


def ask(agent: OfflineAgent, role: Role, reference: str, **fields) -> str:
    request = AgentRequest(role, "", 1, reference, "cpu", **fields)
    reply = agent.complete(request)
    assert reply.refusal is None, reply.refusal
    return reply.text


@pytest.fixture
def agent() -> OfflineAgent:
    return OfflineAgent(0, kernels=True)


def test_plan_then_code_fuses_a_group_into_a_generated_cpp_kernel(agent: OfflineAgent) -> None:
    reference = ref_source("pointwise_swish")
    seed = parse_code_reply(ask(agent, Role.SEED, reference)).code
    plan = parse_plan_reply(ask(agent, Role.PLAN, reference, parent_code=seed)).plan
    assert plan["move"]["kind"] == "fuse"
    assert plan["kernel"]["fused"] == [plan["move"]["group"]]
    assert [g["kind"] for g in plan["groups"]] == ["pointwise"]
    assert plan["groups"][0]["ops"].startswith("sigmoid")

    code = parse_code_reply(ask(agent, Role.CODE, reference, parent_code=seed, plan=plan)).code
    header = read_header(code)
    assert header is not None and header["kernel"] == plan["kernel"]
    assert "class ModelNew" in code and "load_inline" in code
    assert "at::parallel_for" in code and "#pragma" not in code.split("_STARK_CPP_SOURCE")[0]
    assert "// --- group g0" in code


def test_the_next_plan_from_a_fused_parent_tunes_its_schedule(agent: OfflineAgent) -> None:
    reference = ref_source("pointwise_swish")
    seed = parse_code_reply(ask(agent, Role.SEED, reference)).code
    first = parse_plan_reply(ask(agent, Role.PLAN, reference, parent_code=seed)).plan
    fused = parse_code_reply(ask(agent, Role.CODE, reference, parent_code=seed, plan=first)).code
    history = [
        HistoryItem(0, "seed", True, 1.0, code=seed),
        HistoryItem(1, "optimize", True, 1.4, code=fused),
    ]
    plan = parse_plan_reply(
        ask(agent, Role.PLAN, reference, parent_code=fused, history=history)
    ).plan
    assert plan["move"]["kind"] in ("schedule", "compile")
    if plan["move"]["kind"] == "schedule":
        key = plan["move"]["key"]
        assert plan["kernel"]["schedules"]["g0"][key] == plan["move"]["value"]


def test_debug_reads_the_compiler_line_and_steps_down_the_vector_width(
    agent: OfflineAgent,
) -> None:
    reference = ref_source("pointwise_swish")
    seed = parse_code_reply(ask(agent, Role.SEED, reference)).code
    plan = parse_plan_reply(ask(agent, Role.PLAN, reference, parent_code=seed)).plan
    code = parse_code_reply(ask(agent, Role.CODE, reference, parent_code=seed, plan=plan)).code
    lines = code.splitlines()
    start = next(i for i, t in enumerate(lines) if t.startswith("_STARK_CPP_SOURCE = "))
    vec_line = next(i for i, t in enumerate(lines) if "Vec::loadu" in t and i > start)
    main_cpp_line = vec_line - start + 1  # the source string starts on the assignment's line
    log = (
        "Error building extension 'stark_kernels_0':\n"
        f"main.cpp:{main_cpp_line}:24: error: no matching function for call to "
        "'at::vec::Vectorized<float>::loadu(const float*, long, int)'\n"
        "ninja: build stopped: subcommand failed.\n"
    )
    fixed = parse_code_reply(
        ask(agent, Role.DEBUG, reference, parent_code=code, error_log=log)
    ).code
    state = read_header(fixed)["kernel"]
    assert state["schedules"]["g0"]["vector"] == "simd"
    assert "#pragma omp simd" in fixed


def test_debug_refuses_rather_than_pass_the_reference_off_as_a_fix(agent: OfflineAgent) -> None:
    reference = ref_source("pointwise_swish")
    seed = parse_code_reply(ask(agent, Role.SEED, reference)).code
    log = "error: output 0: mismatch (max abs error 3.2)"
    request = AgentRequest(Role.DEBUG, "", 1, reference, "cpu", parent_code=seed, error_log=log)
    reply = agent.complete(request)
    assert reply.refusal is not None and "reference run eagerly" in reply.refusal
    assert "max abs error 3.2" in reply.refusal and "```python" not in reply.text


def test_an_untraceable_model_falls_back_to_the_wrappers_with_the_reason(
    agent: OfflineAgent,
) -> None:
    reference = ref_source("untraceable")
    seed = parse_code_reply(ask(agent, Role.SEED, reference)).code
    plan = parse_plan_reply(ask(agent, Role.PLAN, reference, parent_code=seed)).plan
    assert re.match(r"not used: .*", plan["kernel_writer"])
    assert "kernel" not in plan and plan["transformations"]


def test_kernel_writing_off_uses_the_wrappers() -> None:
    reference = ref_source("pointwise_swish")
    agent = OfflineAgent(0, kernels=False)
    plan = parse_plan_reply(ask(agent, Role.PLAN, reference)).plan
    assert plan["kernel_writer"] == "not used: kernel writing is off (STARK_OFFLINE_KERNELS=0)"
