"""The kernel writer's plan and debug policy on a hand-made analysis (no capture, no builds):
which move it proposes from a parent state, that tried states and failed schedules are never
proposed again, and which targeted edit each failure class gets."""

from __future__ import annotations

import random

from engine.agents.base import HistoryItem
from engine.agents.kernels.analysis import KernelAnalysis
from engine.agents.kernels.debug import culprit, debug_kernel
from engine.agents.kernels.ir import CapturedGraph, FusionGroup
from engine.agents.kernels.planner import all_moves, choose_kernel_move, group_value
from engine.agents.kernels.state import FailedSchedule, KernelState
from engine.agents.transforms import make_header

CHAIN = FusionGroup(
    "g0",
    "pointwise",
    ("mul", "sigmoid", "mul_1", "add"),
    ("x", "bias"),
    ("add",),
    None,
    "mul -> sigmoid -> mul -> add",
)
SOFTMAX = FusionGroup("g1", "reduction", ("softmax",), ("add",), ("softmax",), "softmax", "softmax")
GEMM = FusionGroup(
    "g2", "epilogue", ("linear", "relu"), ("x",), ("relu",), "linear", "linear -> relu"
)
OVERLAP = FusionGroup(
    "g3", "reduction", ("add", "softmax"), ("x",), ("softmax",), "softmax", "add -> softmax"
)
GRAPH = CapturedGraph(nodes=(), inputs=("x",), output_code="return softmax", outputs=("softmax",))


def analysis(*groups: FusionGroup, unsupported: dict[str, dict[str, str]] | None = None):
    return KernelAnalysis(GRAPH, tuple(groups), "cpu", unsupported or {})


def header_item(state: KernelState, node_id: int = 7, speedup: float | None = 1.5) -> HistoryItem:
    code = make_header({"transforms": [], "kernel": state.to_json()}) + "\n# body\n"
    return HistoryItem(node_id, "optimize", True, speedup, code=code)


def test_state_round_trips_and_its_key_is_the_code_not_the_lineage() -> None:
    state = KernelState("cpp", ("g0", "g1"), {"g0": {"grain": 8192}})
    lineage = state.handing_back("g1", "numerics").recording(
        FailedSchedule("g0", "unroll", 4, "timeout")
    )
    assert KernelState.from_json(lineage.to_json()) == lineage
    assert lineage.fused == ("g0",)
    assert lineage.key() == KernelState("cpp", ("g0",), {"g0": {"grain": 8192}}).key()
    back = state.with_schedule("g0", "grain", 32768, 32768)
    assert back.schedules == {}  # the default value is no override
    assert KernelState.from_json({"backend": "fortran"}) is None
    assert KernelState.from_json({"backend": "cpp", "fused": 3}) is None


def test_the_first_move_fuses_the_group_that_saves_most_passes() -> None:
    result = analysis(CHAIN, SOFTMAX, GEMM)
    assert group_value(CHAIN, None) > group_value(GEMM, None)
    move = choose_kernel_move(result, KernelState("cpp"), [], None, random.Random(0))
    assert (move.kind, move.group) == ("fuse", "g0")
    assert move.state.fused == ("g0",)


def test_tried_states_are_never_proposed_again() -> None:
    result = analysis(CHAIN, SOFTMAX)
    tried = [header_item(KernelState("cpp", ("g0",))), header_item(KernelState("cpp", ("g1",)))]
    move = choose_kernel_move(result, KernelState("cpp"), tried, None, random.Random(0))
    assert move.state.key() not in {
        KernelState("cpp", ("g0",)).key(),
        KernelState("cpp", ("g1",)).key(),
    }
    assert move.kind in ("compile", "fuse")


def test_torch_compile_is_one_move_and_is_not_repeated() -> None:
    result = analysis(CHAIN)
    parent = KernelState("cpp", ("g0",))
    moves = {m.kind for m in all_moves(result, parent, None)}
    assert {"schedule", "unfuse"} <= moves
    compiled = HistoryItem(
        3, "optimize", True, 1.2, code=make_header({"transforms": ["compile:default"]})
    )
    rng = random.Random(0)
    for _ in range(20):
        move = choose_kernel_move(result, parent, [compiled], None, rng)
        assert move.kind != "compile"


def test_an_overlapping_group_replaces_instead_of_stacking() -> None:
    result = analysis(CHAIN, OVERLAP)
    moves = all_moves(result, KernelState("cpp", ("g0",)), None)
    replace = [m for m in moves if m.group == "g3"]
    assert [m.kind for m in replace] == ["replace"]
    assert replace[0].state.fused == ("g3",)


def test_unsupported_and_handed_back_groups_are_not_fused() -> None:
    result = analysis(CHAIN, SOFTMAX, unsupported={"cpp": {"g1": "no template"}})
    parent = KernelState("cpp", (), torch_only={"g0": "numerics"})
    assert not [m for m in all_moves(result, parent, None) if m.kind in ("fuse", "replace")]


def test_a_failed_schedule_value_is_not_proposed_again() -> None:
    result = analysis(CHAIN)
    parent = KernelState("cpp", ("g0",)).recording(FailedSchedule("g0", "unroll", 2, "timeout"))
    values = [
        (m.detail["key"], m.detail["value"])
        for m in all_moves(result, parent, None)
        if m.kind == "schedule"
    ]
    assert ("unroll", 2) not in values and ("unroll", 4) in values


def test_the_profile_weights_a_group_by_its_share_of_the_time() -> None:
    profile = [{"name": "aten::_softmax", "percent": 80.0}, {"name": "aten::mul", "percent": 5.0}]
    assert group_value(SOFTMAX, profile) > group_value(
        SOFTMAX, [{"name": "aten::mul", "percent": 90.0}]
    )


def test_debug_steps_down_the_vector_path_on_a_vectorised_compile_error() -> None:
    result = analysis(CHAIN)
    state = KernelState("cpp", ("g0",))
    log = "error: main.cpp:40:12: error: no match for 'operator*' (Vectorized<float>) in g0_mul_sigmoid"
    fix = debug_kernel(result, state, "", log, None)
    assert fix.state is not None and fix.state.schedule_of("g0") == {"vector": "simd"}
    assert fix.state.schedule_failed("g0", "vector", "aten")


def test_debug_uses_compensated_sums_for_a_reduction_mismatch() -> None:
    result = analysis(CHAIN, SOFTMAX)
    state = KernelState("cpp", ("g0", "g1"))
    log = "error: output 0: mismatch, max abs err 3.1e-4 exceeds atol=1e-4 rtol=1e-4 (g1_softmax)"
    fix = debug_kernel(result, state, "", log, None)
    assert fix.state is not None and fix.state.schedule_of("g1") == {"accumulate": "kahan"}


def test_debug_reverts_a_schedule_change_that_broke_the_kernel() -> None:
    result = analysis(CHAIN)
    state = KernelState("cpp", ("g0",), {"g0": {"unroll": 4}})
    move = {"kind": "schedule", "group": "g0", "key": "unroll", "value": 4, "previous": 1}
    fix = debug_kernel(result, state, "", "error: run timed out after 60s", move)
    assert fix.state is not None and fix.state.schedules == {}
    assert fix.state.schedule_failed("g0", "unroll", 4)


def test_debug_hands_a_failing_group_back_to_torch_and_refuses_the_bare_replay() -> None:
    result = analysis(CHAIN, SOFTMAX)
    state = KernelState("cpp", ("g0", "g1"))
    fix = debug_kernel(result, state, "", "error: g0_mul_sigmoid: x must be float32", None)
    assert fix.state is not None and fix.state.fused == ("g1",) and "g0" in fix.state.torch_only
    refused = debug_kernel(result, KernelState("cpp"), "", "error: boom", None)
    assert refused.state is None and "fuses no group" in refused.reason


def test_culprit_falls_back_to_the_last_moved_group() -> None:
    state = KernelState("cpp", ("g0", "g1"))
    assert culprit(state, "", "error: something", {"kind": "fuse", "group": "g0"}) == "g0"
    assert culprit(state, "", "error: something", None) == "g1"


def test_a_parent_whose_one_step_moves_were_tried_gets_a_two_step_state_not_a_copy() -> None:
    """The search keeps expanding eager when the fused child lost to it: the next plan is
    the fused group at a new schedule, never the parent's own code again."""
    result = analysis(SOFTMAX)
    fused = KernelState("cpp", ("g1",))
    tried = [header_item(fused), header_item(KernelState("cpp"))]
    compile_item = HistoryItem(
        3, "optimize", True, 1.0, code=make_header({"transforms": ["compile:default"]})
    )
    move = choose_kernel_move(
        result, KernelState("cpp"), [*tried, compile_item], None, random.Random(0)
    )
    assert move.kind == "schedule"
    assert move.state.fused == ("g1",) and move.state.schedules
    assert move.detail["via"]["kind"] == "fuse"
    assert move.title.startswith("fuse g1") and ", then " in move.title
