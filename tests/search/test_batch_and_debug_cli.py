"""`stark batch` end to end (tiny tasks, one bad) and `stark debug` against the fake endpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main
from tests.search.conftest import QUICK, TINY_REFERENCE, WINNABLE_REFERENCE
from tests.search.test_e2e_scripted import BUGGY, FIXED, fenced

API_KEY = "sk-stark-debug-SECRET-0123456789abcdef"


@pytest.mark.slow
def test_batch_runs_each_task_and_summarises(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], clean_agent_env: None
) -> None:
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "a_relu.py").write_text(WINNABLE_REFERENCE)
    (refs / "b_tanh.py").write_text(WINNABLE_REFERENCE.replace("torch.relu", "torch.tanh"))
    (refs / "c_broken.py").write_text("x = 1\n")
    code = main(
        [
            "batch",
            str(refs),
            "--agent",
            "offline",
            "--rounds",
            "2",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "runs"),
            "--json",
            *QUICK,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    summary = json.loads(out.strip().splitlines()[-1])
    run_dir = Path(summary["run_dir"])
    assert run_dir.name.startswith("batch-")
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    tasks = {t["task"]: t for t in summary["tasks"]}
    assert set(tasks) == {"000_a_relu", "001_b_tanh", "002_c_broken"}
    assert "lacks a top-level class Model" in tasks["002_c_broken"]["error"]
    for name in ("000_a_relu", "001_b_tanh"):
        task = tasks[name]
        assert task["correct"] and task["best_speedup"] > 0
        assert (run_dir / name / "tree.json").exists()
        # round 0's offline seed is the reference itself: labelled, never the best
        assert task["baseline_nodes"] >= 1
        best = json.loads((run_dir / name / "tree.json").read_text())["tree"]["nodes"][
            task["best_round"]
        ]
        assert best["baseline"] is False
        # the reported speedup is the fresh re-measurement, with both sides' median and IQR
        fresh = task["remeasured"]["vs_eager"]
        assert task["best_speedup"] == fresh["speedup"]
        assert fresh["baseline_ms"]["median"] > 0 and fresh["candidate_ms"]["iqr"] >= 0
        assert task["remeasured"]["vs_compile"] is None  # --no-compile-baseline
        assert task["search_best_speedup"] > 0
        assert task["llm_calls"] == 0 and task["agent_calls"] >= 1  # offline: no model
    assert summary["compile_baseline"] is False and summary["atol"] is None
    metrics = summary["metrics"]
    assert metrics["tasks"] == 3 and metrics["correct_tasks"] == 2
    assert metrics["fast_0"] == pytest.approx(2 / 3)
    assert metrics["geomean_speedup"] > 0
    assert 0 <= metrics["wins_beyond_iqr"] <= metrics["correct_tasks"]
    assert metrics["llm_calls"] == 0 and metrics["agent_calls"] >= 2


def test_batch_exits_1_when_every_task_errored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], clean_agent_env: None
) -> None:
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "a_broken.py").write_text("x = 1\n")
    (refs / "b_broken.py").write_text("class Model:\n    pass\n")
    args = ["batch", str(refs), "--agent", "offline", "--rounds", "1", "--device", "cpu"]
    code = main([*args, "--out", str(tmp_path / "runs"), "--json", *QUICK])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1
    assert all(task["error"] for task in summary["tasks"]) and len(summary["tasks"]) == 2


@pytest.mark.slow
def test_batch_task_ids_are_unique_for_same_named_references(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], clean_agent_env: None
) -> None:
    for folder in ("first", "second"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "relu.py").write_text(TINY_REFERENCE)
    code = main(
        [
            "batch",
            str(tmp_path / "first" / "relu.py"),
            str(tmp_path / "second" / "relu.py"),
            "--agent",
            "offline",
            "--rounds",
            "1",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "runs"),
            "--events",
            "jsonl",
            *QUICK,
        ]
    )
    assert code == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    started = [e for e in events if e["event"] == "task_started"]
    assert [e["task_id"] for e in started] == ["relu", "relu-2"]
    assert {e["task_dir"].rsplit("/", 1)[-1] for e in started} == {"000_relu", "001_relu-2"}
    finished = {e["task_id"]: e["summary"] for e in events if e["event"] == "task_finished"}
    assert set(finished) == {"relu", "relu-2"}
    assert finished["relu"]["task_dir"] != finished["relu-2"]["task_dir"]
    assert Path(finished["relu-2"]["task_dir"], "ref_relu-2.py").exists()


@pytest.mark.slow
def test_debug_cli_fixes_a_failing_kernel(
    fake_openai: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    clean_agent_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prompts: list[str] = []

    def script(body: dict[str, Any]) -> str:
        prompts.append(body["messages"][-1]["content"])
        return "Fixed:\n" + fenced("python", FIXED)

    server = fake_openai(script)
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    ref = tmp_path / "ref.py"
    ref.write_text(TINY_REFERENCE)
    kernel = tmp_path / "kernel.py"
    kernel.write_text(BUGGY)
    code = main(
        [
            "debug",
            str(kernel),
            "--reference",
            str(ref),
            "--agent",
            "openai",
            "--base-url",
            server.base_url,
            "--model",
            "fake-model",
            "--device",
            "cpu",
            "--timing-budget",
            "0.2",
            "--json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["original"]["correct"] is False
    assert report["fixed_code"] == FIXED and report["fixed"]["correct"] is True
    assert report["error"] is None
    assert len(prompts) == 1 and "You are the debugger" in prompts[0]
    assert "mismatch" in prompts[0] or "max abs err" in prompts[0]  # the error tail

    # a correct kernel needs no agent call
    kernel.write_text(FIXED)
    assert (
        main(
            [
                "debug",
                str(kernel),
                "--reference",
                str(ref),
                "--agent",
                "openai",
                "--base-url",
                server.base_url,
                "--model",
                "fake-model",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["original"]["correct"] and report["fixed_code"] is None
    assert len(prompts) == 1
