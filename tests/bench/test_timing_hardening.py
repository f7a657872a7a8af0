"""Timing-integrity defences: tampering with the worker's own objects, child processes that
load the CPU, memoisation where rescaling can't change the inputs, and output containers."""

from __future__ import annotations

import pytest
import torch

from engine.bench import timing
from engine.bench.integrity import HarnessPatched, InstanceSnapshot, raise_if_patched
from engine.bench.output_checks import CheckFailure, compare_outputs

pytestmark = pytest.mark.timeout(120)


def assert_rejected(result, stage: str, phrase: str, flag: str | None = None) -> None:  # noqa: ANN001
    assert result.compiled, result.error
    assert not result.correct, result.summary()
    assert result.stage == stage, (result.stage, result.error)
    assert phrase in (result.error or ""), result.error
    if flag:
        assert flag in result.flags, result.flags


# -- end to end, through the sandbox ------------------------------------------------------
def test_shadowing_a_method_on_the_evaluation_instance_fails(evaluate_files) -> None:
    result = evaluate_files("scale_add", "tim_forge_instance")
    assert_rejected(result, "correctness", "Evaluation.time_both", flag="harness_patched")
    assert result.speedup != 4.2


def test_shadowing_a_method_on_the_timer_instance_fails(evaluate_files) -> None:
    result = evaluate_files("scale_add", "tim_timer_instance")
    assert_rejected(result, "correctness", "Timer._reset_settings", flag="harness_patched")


def test_child_processes_left_running_fail_and_are_killed(evaluate_files) -> None:
    result = evaluate_files("scale_add", "tim_child_hog")
    assert_rejected(
        result, "runtime", "candidate left 2 child process(es) running", flag="child_processes"
    )


def test_memoising_an_integer_input_serves_no_timed_call(evaluate_files) -> None:
    # Before: timing reused one index tensor (rescaling skips integers), so every timed call
    # was a cache hit. Now each round draws fresh inputs and the memo never hits.
    result = evaluate_files("tim_index", "tim_index_memo", warmup_s=0.0)
    assert result.correct, result.summary()
    assert "tim-memo-hit" not in result.log


def test_no_input_task_is_flagged_memoisation_undetectable(evaluate_files) -> None:
    result = evaluate_files("tim_no_inputs", "tim_no_inputs_cached")
    assert result.correct, result.summary()
    assert "memoisation_undetectable" in result.flags


def test_list_where_the_reference_returns_a_tuple_fails(evaluate_files) -> None:
    result = evaluate_files("tim_pair", "tim_pair_as_list")
    assert_rejected(result, "correctness", "candidate returned a list, the reference a tuple")
    honest = evaluate_files("tim_pair", "tim_pair_honest")
    assert honest.correct, honest.summary()


# -- in process: the pieces ----------------------------------------------------------------
class _Owner:
    def __init__(self) -> None:
        self.clock = object()
        self.count = 0

    def method(self) -> int:
        return 1


def test_instance_snapshot_sees_shadowed_methods_and_rebound_attributes() -> None:
    owner = _Owner()
    guard = InstanceSnapshot.take(owner, "Owner", mutable=("count",))
    owner.count += 1  # declared mutable
    assert guard.changed() == []
    owner.method = lambda: 2  # type: ignore[method-assign]
    owner.clock = object()
    assert guard.changed() == ["Owner.clock", "Owner.method"]
    with pytest.raises(HarnessPatched, match="Owner.clock"):
        raise_if_patched(guard)


def test_instance_snapshot_covers_slots() -> None:
    clocks = timing.Clocks.capture()
    guard = InstanceSnapshot.take(clocks, "Clocks")
    object.__setattr__(clocks, "perf_ns", lambda: 0)
    assert guard.changed() == ["Clocks.perf_ns"]


def test_rescaling_alone_changes_only_floating_point_inputs() -> None:
    assert timing.rescaling_changes_inputs([torch.randn(3), 2])
    assert timing.rescaling_changes_inputs([torch.randn(3, dtype=torch.complex64)])
    assert not timing.rescaling_changes_inputs([torch.randn(3), torch.arange(3)])
    assert not timing.rescaling_changes_inputs([torch.ones(3, dtype=torch.bool)])
    assert not timing.rescaling_changes_inputs([])
    assert not timing.rescaling_changes_inputs([3, 4.0])


def test_chained_rescale_keeps_inputs_a_factor_of_the_pristine_ones() -> None:
    pristine = torch.randn(1000)
    inputs = [pristine.clone(), torch.arange(5)]
    factor = 1.0
    for _ in range(200):
        previous, factor = factor, timing._next_factor(factor)
        timing._rescale(inputs, factor / previous)
    assert torch.allclose(inputs[0], pristine * factor, rtol=1e-4, atol=0)
    assert torch.equal(inputs[1], torch.arange(5))


@pytest.mark.parametrize(
    ("new", "ref", "message"),
    [
        ([torch.ones(2)], (torch.ones(2),), "returned a list, the reference a tuple"),
        ((torch.ones(2),), [torch.ones(2)], "returned a tuple, the reference a list"),
    ],
)
def test_output_container_must_match(new: object, ref: object, message: str) -> None:
    with pytest.raises(CheckFailure, match=message):
        compare_outputs(new, ref, None, None)


def test_named_tuple_output_counts_as_a_tuple() -> None:
    ref = torch.max(torch.randn(4, 3), dim=1)  # torch.return_types.max
    compare_outputs(tuple(t.clone() for t in ref), ref, None, None)
