"""Task directory: layout, redaction, numbering that continues after a restart, atomicity."""

from __future__ import annotations

import json
from pathlib import Path

from engine.artifacts.redact import Redactor
from engine.artifacts.taskdir import TaskDir, UsageRow, atomic_write_text, find_task_id, safe_name
from engine.bench.result import EvalResult

KEY = "sk-live-abcdefghijklmnopqrstuvwx"


def test_layout_and_redaction(tmp_path: Path) -> None:
    task = TaskDir(tmp_path / "t", "../evil/name", Redactor([KEY]))
    assert task.task_id.startswith("evil_name-") and "/" not in task.task_id
    task.create("class Model: pass\n")
    for sub in ("code", "evaluation/llm_io", "figures", "trace"):
        assert (task.root / sub).is_dir()
    assert task.reference_path.name == f"ref_{task.task_id}.py"
    assert find_task_id(task.root) == task.task_id
    task.write_llm_io(
        0, "seed", f"prompt {KEY}", f"reply Bearer {KEY}", "thinking sk-other0123456789abc"
    )
    task.append_usage(UsageRow(0, "plan", "m", 10, 5, 0.5, None, False, f"401 bad key {KEY}"))
    task.write_metrics(0, EvalResult(error=f"echo {KEY}"), {"node_id": 0})
    task.save_state({"secret": KEY})
    task.log(f"log {KEY}")
    for path in task.root.rglob("*"):
        if path.is_file():
            assert KEY not in path.read_text(), path
    rows = task.read_usage()
    assert rows[0]["role"] == "plan" and rows[0]["ok"] == "0" and "[REDACTED]" in rows[0]["error"]


def test_llm_io_numbering_continues_after_restart(tmp_path: Path) -> None:
    first = TaskDir(tmp_path, "t")
    first.create("")
    first.write_llm_io(0, "seed", "p", "r")
    first.write_llm_io(1, "plan", "p", "r")
    second = TaskDir(tmp_path, "t")  # a resumed process
    paths = second.write_llm_io(1, "plan", "p", "r")
    assert paths[0].name == "00003_r001_plan_prompt.md"
    assert len(list(second.llm_io_dir.glob("*_prompt.md"))) == 3


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "tree.json"
    for i in range(5):
        atomic_write_text(target, json.dumps({"i": i}))
    assert json.loads(target.read_text()) == {"i": 4}
    assert [p.name for p in tmp_path.iterdir()] == ["tree.json"]
    assert "/" not in safe_name("a/b\\c") and safe_name("row_softmax") == "row_softmax"
