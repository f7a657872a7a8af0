"""Batch summary maths (KernelBench fast_p, geomean) and task expansion/sampling."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from engine.batch.metrics import (
    TaskOutcome,
    batch_exit_code,
    expand_paths,
    fast_p,
    fast_p_point,
    sample_tasks,
    summarize,
    unique_task_ids,
)
from engine.trace.sanitize import sanitize_name


def outcome(name: str, correct: bool, speedup: float | None) -> TaskOutcome:
    return TaskOutcome(name, f"{name}.py", None, correct, speedup, llm_calls=3)


OUTCOMES = [
    outcome("a", True, 0.8),
    outcome("b", True, 1.2),
    outcome("c", True, 2.5),
    outcome("d", False, None),
    outcome("e", True, 1.5),  # exactly 1.5: not > 1.5
]


def test_fast_p_point_counts_correct_and_strictly_faster_over_all_tasks() -> None:
    assert fast_p_point(OUTCOMES, 0.0) == pytest.approx(4 / 5)
    assert fast_p_point(OUTCOMES, 1.0) == pytest.approx(3 / 5)
    assert fast_p_point(OUTCOMES, 1.5) == pytest.approx(1 / 5)
    assert fast_p_point(OUTCOMES, 2.0) == pytest.approx(1 / 5)
    assert fast_p_point([], 1.0) == 0.0
    # the headline needs a re-measured win beyond the IQRs for p >= 1 (none measured here)
    assert fast_p(OUTCOMES, 0.0) == pytest.approx(4 / 5)
    assert fast_p(OUTCOMES, 1.0) == 0.0


def test_summary_means() -> None:
    metrics = summarize(OUTCOMES)
    correct = [0.8, 1.2, 2.5, 1.5]
    assert metrics["tasks"] == 5 and metrics["correct_tasks"] == 4
    assert metrics["correctness_rate"] == metrics["fast_0"] == pytest.approx(0.8)
    assert metrics["mean_speedup"] == pytest.approx(sum(correct) / 4)
    assert metrics["geomean_speedup"] == pytest.approx(math.prod(correct) ** (1 / 4))
    # the 0.8x kernel and the failed task both count as 1.0: the user keeps the reference
    kept = [1.0, 1.2, 2.5, 1.5, 1.0]
    assert metrics["geomean_speedup_all"] == pytest.approx(math.prod(kept) ** (1 / 5))
    assert metrics["fast_1.5_point"] == pytest.approx(0.2)
    assert metrics["llm_calls"] == 15


def test_summary_of_all_failures() -> None:
    metrics = summarize([outcome("x", False, None)])
    assert metrics["mean_speedup"] is None and metrics["geomean_speedup"] is None
    assert metrics["fast_0"] == 0.0


def test_expand_and_sample(tmp_path: Path) -> None:
    for name in ("b.py", "a.py", "_private.py", "notes.txt"):
        (tmp_path / name).write_text("")
    single = tmp_path / "sub"
    single.mkdir()
    (single / "c.py").write_text("")
    paths = expand_paths([str(tmp_path), str(single / "c.py")])
    assert [p.name for p in paths] == ["a.py", "b.py", "c.py"]
    assert sample_tasks(paths, 2, 0) == sample_tasks(paths, 2, 0)
    assert len(sample_tasks(paths, 2, 0)) == 2
    assert sample_tasks(paths, None, 0) == paths
    with pytest.raises(FileNotFoundError):
        expand_paths([str(tmp_path / "missing.py")])
    with pytest.raises(ValueError):
        expand_paths([str(tmp_path / "sub" / "..")] if False else [str(_empty(tmp_path))])


def _empty(tmp_path: Path) -> Path:
    empty = tmp_path / "empty"
    empty.mkdir()
    return empty


def test_task_ids_are_unique_per_task() -> None:
    paths = [Path("a/relu.py"), Path("b/relu.py"), Path("c/relu-2.py"), Path("gelu.py")]
    assert unique_task_ids(paths) == ["relu", "relu-2", "relu-2-2", "gelu"]
    assert unique_task_ids([Path("x/../a b.py")]) == ["a_b"]  # safe names, no hash


def test_task_ids_carry_no_hash_suffix_as_the_help_says() -> None:
    """KernelBench's `12_Matmul_with_diagonal_matrices_.py` (trailing underscore) used to
    become `12_Matmul_with_diagonal_matrices-be914536`; ids are plain stems, -2 on clashes."""
    paths = [
        Path("level1/12_Matmul_with_diagonal_matrices_.py"),
        Path("relu_.py"),
        Path("relu.py"),
        Path("x" * 80 + ".py"),
    ]
    ids = unique_task_ids(paths)
    assert ids[:3] == ["12_Matmul_with_diagonal_matrices", "relu", "relu-2"]
    assert ids[3] == "x" * 60
    for task_id in ids:  # already safe: TaskDir and the trace keep them as they are
        assert sanitize_name(task_id) == task_id
    from engine.cli.batch import __doc__ as help_text

    assert help_text is not None and "no hash suffix" in help_text


def test_exit_code_fails_only_when_every_task_errored() -> None:
    errored = TaskOutcome("x", "x.py", None, False, None, error="bad reference")
    ran_without_a_correct_kernel = outcome("y", False, None)
    assert batch_exit_code([errored, errored]) == 1
    assert batch_exit_code([errored, ran_without_a_correct_kernel]) == 0
    assert batch_exit_code([outcome("z", True, 1.3)]) == 0


def test_metrics_use_the_re_measured_figures_and_count_wins_beyond_iqr() -> None:
    from engine.artifacts.remeasured import Comparison, Remeasured, Timing

    def fresh(speedup: float, iqr: float) -> Comparison:
        base, cand = Timing(10.0, iqr), Timing(10.0 / speedup, iqr)
        win = cand.median + iqr / 2 < base.median - iqr / 2
        return Comparison(speedup, base, cand, beyond_iqr=win, noisy=False)

    clear = TaskOutcome(
        "a", "a.py", None, True, 1.5, search_best_speedup=1.7,
        remeasured=Remeasured(vs_eager=fresh(1.5, 0.2), vs_compile=fresh(1.1, 0.1)),
    )  # fmt: skip
    noise = TaskOutcome(
        "b", "b.py", None, True, 1.02, search_best_speedup=1.3,
        remeasured=Remeasured(vs_eager=fresh(1.02, 1.0), vs_compile=fresh(0.9, 0.1)),
    )  # fmt: skip
    metrics = summarize([clear, noise, outcome("c", False, None)])
    assert metrics["fast_1_point"] == pytest.approx(2 / 3)  # KernelBench's count, re-measured
    assert metrics["fast_1"] == pytest.approx(1 / 3)  # the 1.02x inside the noise is no win
    assert metrics["wins_beyond_iqr"] == 1 and metrics["fast_1_beyond_iqr"] == pytest.approx(1 / 3)
    assert metrics["geomean_speedup"] == pytest.approx((1.5 * 1.02) ** 0.5)
    assert metrics["search_geomean_speedup"] == pytest.approx((1.7 * 1.3) ** 0.5)
    assert metrics["compile_measured_tasks"] == 2
    assert metrics["geomean_speedup_vs_compile"] == pytest.approx((1.1 * 0.9) ** 0.5)
    assert metrics["fast_1_vs_compile"] == pytest.approx(1 / 3)
    assert metrics["wins_beyond_iqr_vs_compile"] == 1


def test_wins_inside_the_noise_do_not_count_for_fast_1_or_fast_1_vs_compile() -> None:
    """Old code counted a 1.05x within the IQRs as a fast_1 win, vs eager and vs compile."""
    from engine.artifacts.remeasured import Comparison, Remeasured, Timing

    inside = Comparison(1.05, Timing(10.0, 2.0), Timing(10.0 / 1.05, 2.0), False, True)
    clear = Comparison(2.0, Timing(10.0, 0.1), Timing(5.0, 0.1), True, False)
    noisy_win = TaskOutcome(
        "a", "a.py", None, True, 1.05,
        remeasured=Remeasured(vs_eager=inside, vs_compile=inside),
    )  # fmt: skip
    real_win = TaskOutcome(
        "b", "b.py", None, True, 2.0, remeasured=Remeasured(vs_eager=clear, vs_compile=clear)
    )
    metrics = summarize([noisy_win, real_win])
    assert metrics["fast_1"] == pytest.approx(1 / 2)
    assert metrics["fast_1_point"] == pytest.approx(2 / 2)
    assert metrics["fast_1.5"] == pytest.approx(1 / 2)
    assert metrics["fast_1_vs_compile"] == pytest.approx(1 / 2)
    assert metrics["fast_1_vs_compile_point"] == pytest.approx(2 / 2)
    assert metrics["fast_0"] == pytest.approx(1.0)
