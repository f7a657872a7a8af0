"""Each defence of issue 2 against a small adversarial candidate of our own: it must be
rejected (or flagged) for the right reason, and honest candidates must still pass."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(120)


def assert_rejected(result, *phrases: str, flag: str | None = None) -> None:  # noqa: ANN001
    assert result.compiled, result.error
    assert not result.correct, result.summary()
    assert result.stage == "correctness", (result.stage, result.error)
    for phrase in phrases:
        assert phrase in result.error, result.error
    if flag:
        assert flag in result.flags, result.flags


def test_honest_candidate_passes_with_speedup_near_one(evaluate_files) -> None:
    result = evaluate_files("scale_add", "honest")
    assert result.correct, result.summary()
    assert result.error is None and result.stage is None
    assert result.trials_passed == result.correctness_trials == 5
    assert result.max_abs_err == 0.0
    assert result.ref_ms.n == result.new_ms.n == 15
    # Same computation on both sides: not a timing assertion, a sanity bound on the ratio.
    assert 0.2 < result.speedup < 5.0
    assert result.compile_s is not None and result.kernel_s is not None
    assert result.harness_overhead_s is not None and result.harness_overhead_s >= 0


def test_honest_tiny_values_pass_the_tight_check(evaluate_files) -> None:
    result = evaluate_files("tiny_values", "tiny_honest")
    assert result.correct, result.summary()


def test_empty_like_fails(evaluate_files) -> None:
    result = evaluate_files("scale_add", "empty_like")
    assert_rejected(result, "output 0")
    assert result.trials_passed == 0


def test_zeros_against_tiny_reference_fail(evaluate_files) -> None:
    result = evaluate_files("tiny_values", "zeros_tiny")
    assert_rejected(result, "constant output", "dwarfs", flag="near_zero_output")


def test_answer_cached_from_first_trial_fails(evaluate_files) -> None:
    result = evaluate_files("scale_add", "cache_first")
    assert_rejected(result, "mismatch")
    # Honest only on its first call, which is the harness's unchecked JIT warm-up call.
    assert result.trials_passed == 0


def test_modifying_inputs_fails(evaluate_files) -> None:
    result = evaluate_files("scale_add", "inplace_input")
    assert_rejected(result, "candidate modified its inputs", flag="modified_inputs")


def test_returning_an_input_fails_as_alias(evaluate_files) -> None:
    result = evaluate_files("abs_value", "alias_input")
    assert_rejected(result, "aliases an input", flag="output_aliases_input")


def test_tensor_subclass_fails(evaluate_files) -> None:
    result = evaluate_files("scale_add", "subclass")
    assert_rejected(result, "not exactly torch.Tensor", "Sneaky", flag="tensor_subclass")


def test_wrong_dtype_fails(evaluate_files) -> None:
    assert_rejected(evaluate_files("scale_add", "wrong_dtype"), "dtype torch.float64")


def test_wrong_shape_fails(evaluate_files) -> None:
    assert_rejected(evaluate_files("scale_add", "wrong_shape"), "shape (64, 127)")


def test_nan_where_reference_is_finite_fails(evaluate_files) -> None:
    assert_rejected(evaluate_files("scale_add", "nan_output"), "NaN/Inf where the reference")


def test_background_thread_is_neither_correct_nor_fast(evaluate_files) -> None:
    result = evaluate_files("scale_add", "background_thread")
    assert_rejected(result, "background thread", flag="background_thread")
    assert result.speedup is None


def test_patched_timers_are_flagged_and_buy_nothing(evaluate_files) -> None:
    result = evaluate_files("scale_add", "timer_patch")
    assert "timer_tampering" in result.flags
    assert result.correct, result.summary()  # it is correct; its timing is ours, not its own
    assert 0.2 < result.speedup < 5.0


def test_changed_thread_count_is_flagged(evaluate_files) -> None:
    result = evaluate_files("scale_add", "thread_change", num_threads=2)
    assert "thread_settings_changed" in result.flags
    assert result.correct  # flagged, and both sides were still timed with 2 threads


def test_patching_torch_to_fool_the_reference_fails(evaluate_files) -> None:
    result = evaluate_files("scale_add", "torch_patch")
    assert_rejected(result, "candidate replaced torch.relu", flag="torch_patched")


def test_forged_result_file_does_not_pass(evaluate_files) -> None:
    result = evaluate_files("scale_add", "forge_result")
    assert not result.correct
    assert result.speedup != 100.0
    # request.json is deleted before user code runs, so the forger only had a guess.
    assert "forged_result" in result.flags
    assert "bad signature" in result.error
    assert not result.compiled  # its forged "run" in the phase file lacks the worker's token


def test_torch_compile_candidate_is_not_mistaken_for_tampering(evaluate_files) -> None:
    result = evaluate_files("scale_add", "compiled_honest")
    assert result.correct, result.summary()
    assert "torch_patched" not in result.flags


def test_profile_lists_the_candidates_top_operators(evaluate_files) -> None:
    result = evaluate_files("scale_add", "honest", profile=True, profile_top_k=3)
    assert result.correct, result.summary()
    assert result.profile is not None and 1 <= len(result.profile) <= 3
    names = [entry.name for entry in result.profile]
    assert any(name.startswith("aten::") for name in names), names
    assert all(entry.self_ms > 0 and entry.calls >= 1 for entry in result.profile)
    assert all(0 < entry.percent <= 100 for entry in result.profile)
    self_times = [entry.self_ms for entry in result.profile]
    assert self_times == sorted(self_times, reverse=True)


def test_rewriting_the_result_on_its_way_to_disk_does_not_pass(evaluate_files) -> None:
    result = evaluate_files("scale_add", "rewrite_result")
    assert not result.correct
    assert result.speedup != 100.0


def test_patching_the_harness_itself_fails(evaluate_files) -> None:
    result = evaluate_files("scale_add", "patch_harness")
    assert_rejected(result, "patched the benchmark harness", flag="harness_patched")
    assert "engine.bench.correctness.compare_outputs" in result.error


def test_a_swallowed_build_failure_is_flagged(evaluate_files) -> None:
    result = evaluate_files("scale_add", "swallowed_build_error")
    assert result.correct, result.summary()
    assert "extension_build_failed" in result.flags
    assert "kernel.cpp:1:" in result.log and "error:" in result.log


def test_output_going_wrong_during_timing_fails(evaluate_files) -> None:
    result = evaluate_files("scale_add", "turns_bad_after_warmup")
    assert_rejected(result, "wrong output during timing", "mismatch")
    assert result.trials_passed == 5
    assert result.max_abs_err > 1e-3  # the failing round's error is reported, not just 0


def test_os_thread_left_running_by_forward_is_flagged(evaluate_files) -> None:
    result = evaluate_files("scale_add", "native_thread")
    assert "native_thread_started" in result.flags, result.summary() + result.log[-2000:]
    honest = evaluate_files("scale_add", "cpp_ctypes_a")  # OpenMP-free C++ kernel: no flag
    assert "native_thread_started" not in honest.flags


def test_answers_memoised_during_timing_fail(evaluate_files) -> None:
    result = evaluate_files("scale_add", "memo_by_pointer")
    assert_rejected(result, "wrong output during timing")


@pytest.mark.parametrize(
    ("candidate", "switch"),
    [
        ("backend_switch_in_init", "mkldnn_enabled: True -> False"),
        ("backend_switch_in_forward", "float32_matmul_precision: 'highest' -> 'medium'"),
    ],
)
def test_changing_torch_backend_settings_fails(evaluate_files, candidate: str, switch: str) -> None:
    result = evaluate_files("scale_add", candidate)
    assert_rejected(result, "backend settings", switch, flag="backend_settings_changed")
