"""`stark trace TASK_DIR` on a synthetic task directory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from engine.bench import EvalConfig, EvalResult
from engine.cli import main
from engine.trace import ActionType, Trace
from engine.trace.index import INDEX_NAME


def _tester(trace: Trace, verdict: EvalResult, node_id: int, round_: int) -> None:
    trace.insert_tester_record(
        verdict.to_json(),
        "log",
        "",
        reference_src="class Model: ...\n",
        candidate_src="class ModelNew: ...\n",
        eval_config=EvalConfig(device="cpu"),
        node_id=node_id,
        round=round_,
    )


@pytest.fixture()
def task_dir(tmp_path: Path) -> Path:
    """A search of three rounds: seed (correct), plan+code (faster), debug of a failure."""
    trace = Trace("elementwise_chain", "0007", tmp_path / "task" / "trace")
    trace.insert_designer_or_coder_record(
        "```python\nx\n```", "seed", "", "DO_CODER", node_id=0, round=0
    )
    _tester(trace, EvalResult(compiled=True, correct=True, speedup=1.02), 0, 0)
    trace.record_selection(0, "exploit", "best leader", round=1)
    trace.insert_designer_or_coder_record(
        '{"plan": 1}', "plan", "", ActionType.DO_DESIGNER, round=1
    )
    trace.insert_conductor_record("CheckDesigner", "reply", '{"ok": true, "anchors": 1}', round=1)
    trace.insert_designer_or_coder_record(
        "```python\ny\n```", "code", "", "DO_CODER", node_id=1, round=1
    )
    _tester(trace, EvalResult(compiled=True, correct=True, speedup=3.5), 1, 1)
    trace.record_selection(1, "explore", "leaf sampled", round=2)
    trace.insert_designer_or_coder_record(
        "```python\nz\n```", "code", "", "DO_CODER", node_id=2, round=2
    )
    _tester(
        trace,
        EvalResult(compiled=True, correct=False, error="output 0: mismatch [max abs err 8.2]"),
        2,
        2,
    )
    trace.insert_conductor_record("AnalyzeError", "tail", "the clamp bounds are swapped", round=2)
    return tmp_path / "task"


def test_plain_timeline(task_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", str(task_dir)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith(f"trace: {task_dir / 'trace'}")
    assert lines[1].split() == [
        "TIME", "STEP", "ROUND", "ACTION", "NODE", "VERDICT", "SPEEDUP", "DETAIL",
    ]  # fmt: skip
    verify_rows = [line for line in lines if " VERIFY " in line]
    assert len(verify_rows) == 3
    assert "S02" in verify_rows[0] and "correct" in verify_rows[0] and "1.02x" in verify_rows[0]
    assert "3.50x" in verify_rows[1]
    assert "incorrect" in verify_rows[2] and "[max abs err 8.2]" in verify_rows[2]
    assert any("SelectNode" in line and "explore" in line for line in lines)
    assert lines[-1] == (
        "7 steps: 4 LLM calls, 3 verifications (2 correct); best 3.50x at step 5, node 1"
    )


def test_json_timeline(task_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", str(task_dir), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["best_speedup"] == 3.5 and data["summary"]["best_node"] == 1
    actions = [(r["step"], r["action"]) for r in data["rows"] if r["kind"] == "action"]
    assert actions == [
        (1, "DO_CODER"),
        (2, "VERIFY"),
        (3, "DO_DESIGNER"),
        (4, "DO_CODER"),
        (5, "VERIFY"),
        (6, "DO_CODER"),
        (7, "VERIFY"),
    ]
    select = [r for r in data["rows"] if r["action"] == "SelectNode"]
    assert [(r["step"], r["node_id"], r["mode"]) for r in select] == [
        (2, 0, "exploit"),
        (5, 1, "explore"),
    ]
    verify = next(r for r in data["rows"] if r["action"] == "VERIFY")
    assert "elementwise_chain/I0007_S02_verify/verify_elementwise_chain.py" in verify["files"]
    for row in data["rows"]:
        for name in row["files"]:
            assert (Path(data["trace_dir"]) / name).is_file()


def test_filters(task_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", str(task_dir), "--json", "--no-conductor"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert rows and all(r["kind"] == "action" for r in rows)
    assert main(["trace", str(task_dir / "trace" / "elementwise_chain"), "--op", "nope"]) == 2
    assert "no op 'nope'" in capsys.readouterr().err


def test_timeline_without_index_uses_file_names(
    task_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (task_dir / "trace" / "elementwise_chain" / INDEX_NAME).unlink()
    assert main(["trace", str(task_dir / "trace"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert {r["source"] for r in rows} == {"files"}
    verify = [(r["step"], r["verdict"], r["speedup"]) for r in rows if r["action"] == "VERIFY"]
    assert verify == [(2, "correct", 1.02), (5, "correct", 3.5), (7, "incorrect", None)]
    assert len([r for r in rows if r["kind"] == "conductor"]) == 4


def test_rich_table_on_a_terminal(
    task_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("COLUMNS", "120")
    assert main(["trace", str(task_dir)]) == 0
    out = capsys.readouterr().out
    assert "DO_DESIGNER" in out and "3.50x" in out and "[max abs err 8.2]" in out
    assert "─" in out  # the rich table rule


def test_bad_directories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["trace", str(tmp_path / "file")]) == 2
    assert "not a directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["trace", str(tmp_path / "empty")]) == 2
    assert "no trace found" in capsys.readouterr().err


def test_task_ids_that_look_like_steps_stay_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tricky, plain = Trace("op", "run_S12", tmp_path), Trace("op", "run", tmp_path)
    for _ in range(3):
        tricky.insert_designer_or_coder_record("r", "p", "", "DO_CODER")
    assert plain.insert_designer_or_coder_record("r", "p", "", "DO_CODER") == 1
    assert Trace("op", "run", tmp_path).current_step == 1  # resume ignores run_S12's files
    (tmp_path / "op" / INDEX_NAME).unlink()
    assert main(["trace", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert sorted((r["task_id"], r["step"]) for r in rows) == [
        ("run", 1),
        ("run_S12", 1),
        ("run_S12", 2),
        ("run_S12", 3),
    ]
