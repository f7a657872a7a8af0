"""File naming and layout of every record type, step numbering and resume."""

from __future__ import annotations

import json
import runpy
import threading
from pathlib import Path

import pytest

from engine.bench import EvalConfig, EvalResult
from engine.trace import ActionType, Trace, action_for_role
from engine.trace.index import INDEX_NAME, read_index

PLAN_REPLY = """I will fuse the chain into one loop.

```json
{"strategy": "fuse elementwise ops", "anchors": ["forward"]}
```

Anchored code:

```python
import torch
# <<<IMPROVE BEGINS>>>
class ModelNew(torch.nn.Module):
    def forward(self, x):
        return x * 2
# <<<IMPROVE ENDS>>>
```
That should be faster.
"""

CPP_CANDIDATE = """
from torch.utils.cpp_extension import load_inline
ext = load_inline(name="k", cpp_sources="int f() { return 1; }", functions=["f"])
class ModelNew: ...
"""


def _verdict(**kwargs: object) -> str:
    return EvalResult(**kwargs).to_json()  # type: ignore[arg-type]


def _tester(
    trace: Trace, verdict: str, candidate: str = "class ModelNew: ...\n", **kw: object
) -> int:
    return trace.insert_tester_record(
        verdict,
        "worker log line",
        '[{"name": "aten::mul", "self_ms": 0.5, "calls": 3, "percent": 80.0}]',
        reference_src="class Model: ...\n",
        candidate_src=candidate,
        eval_config=EvalConfig(device="cpu"),
        **kw,  # type: ignore[arg-type]
    )


def test_designer_record_files_and_content(tmp_path: Path) -> None:
    trace = Trace("exp_add_op", "123", tmp_path)
    step = trace.insert_designer_or_coder_record(
        PLAN_REPLY, "the full prompt", "thinking...", ActionType.DO_DESIGNER
    )
    assert step == 1
    op_dir = tmp_path / "exp_add_op"
    stem = "I123_S01_exp_add_op_DO_DESIGNER"
    assert (op_dir / f"{stem}_prompt.txt").read_text() == "the full prompt"
    assert (op_dir / f"{stem}_reasoning.txt").read_text() == "thinking..."
    result = (op_dir / f"{stem}_result.txt").read_text()
    # plan JSON pretty-printed, code verbatim with anchors, prose kept as comments
    assert '"strategy": "fuse elementwise ops"' in result
    assert "# <<<IMPROVE BEGINS>>>\nclass ModelNew(torch.nn.Module):" in result
    assert "# I will fuse the chain into one loop." in result
    assert "# That should be faster." in result
    assert "```" not in result
    assert trace.last_files == [
        op_dir / f"{stem}_{p}.txt" for p in ("result", "prompt", "reasoning")
    ]


def test_reasoning_empty_file_and_raw_fallback(tmp_path: Path) -> None:
    trace = Trace("op", "7", tmp_path)
    trace.insert_designer_or_coder_record("Sorry, I cannot help.", "p", "", ActionType.DO_CODER)
    stem = tmp_path / "op" / "I7_S01_op_DO_CODER"
    assert Path(f"{stem}_reasoning.txt").read_text() == ""
    assert Path(f"{stem}_result.txt").read_text() == "Sorry, I cannot help."


def test_think_blocks_become_reasoning_and_bare_code_is_code(tmp_path: Path) -> None:
    trace = Trace("op", "7", tmp_path)
    reply = "<think>try clamp</think>\nimport torch\n\nclass ModelNew(torch.nn.Module):\n    pass\n"
    trace.insert_designer_or_coder_record(reply, "p", "", "FIX_CODER")
    stem = tmp_path / "op" / "I7_S01_op_FIX_CODER"
    assert Path(f"{stem}_reasoning.txt").read_text() == "try clamp"
    result = Path(f"{stem}_result.txt").read_text()
    assert "class ModelNew" in result and "<think>" not in result


def test_unterminated_code_block_is_marked(tmp_path: Path) -> None:
    trace = Trace("op", "7", tmp_path)
    trace.insert_designer_or_coder_record("```python\nimport torch\nx = (", "p", "", "DO_CODER")
    result = (tmp_path / "op" / "I7_S01_op_DO_CODER_result.txt").read_text()
    assert "unterminated" in result and "x = (" in result


def test_tester_record_layout(tmp_path: Path) -> None:
    trace = Trace("exp_add_op", "123", tmp_path)
    trace.insert_designer_or_coder_record(PLAN_REPLY, "p", "", ActionType.DO_CODER)
    step = _tester(trace, _verdict(compiled=True, correct=True, speedup=1.7), CPP_CANDIDATE)
    assert step == 2
    op_dir = tmp_path / "exp_add_op"
    error_log = (op_dir / "I123_S02_exp_add_op_VERIFY_error_log.txt").read_text()
    assert "CORRECT, speedup 1.70x" in error_log
    assert '"speedup": 1.7' in error_log  # pretty-printed verdict JSON
    assert "worker log line" in error_log
    profile = json.loads((op_dir / "I123_S02_exp_add_op_VERIFY_profile.txt").read_text())
    assert profile[0]["name"] == "aten::mul"
    verify_dir = op_dir / "I123_S02_verify"
    assert sorted(p.name for p in verify_dir.iterdir()) == [
        "exp_add_op_cpp.py",
        "exp_add_op_torch.py",
        "verify_exp_add_op.py",
    ]
    assert (verify_dir / "exp_add_op_cpp.py").read_text() == CPP_CANDIDATE
    assert (verify_dir / "exp_add_op_torch.py").read_text() == "class Model: ...\n"
    script = verify_dir / "verify_exp_add_op.py"
    compile(script.read_text(), str(script), "exec")  # valid Python
    assert script.stat().st_mode & 0o111


def test_tester_record_with_the_issue_signature(tmp_path: Path) -> None:
    """insert_tester_record(verify_res, verify_log, profile, action_type): without the
    sources there is no verify folder, and error_log.txt says why."""
    trace = Trace("op", "5", tmp_path)
    verdict = _verdict(compiled=True, correct=True, speedup=1.2)
    step = trace.insert_tester_record(verdict, "log line", "[]", ActionType.VERIFY)
    op_dir = tmp_path / "op"
    error_log = (op_dir / f"I5_S{step:02d}_op_VERIFY_error_log.txt").read_text()
    assert "no verify folder: reference_src, candidate_src, eval_config not given" in error_log
    assert "CORRECT, speedup 1.20x" in error_log and "log line" in error_log
    assert (op_dir / f"I5_S{step:02d}_op_VERIFY_profile.txt").exists()
    assert not (op_dir / f"I5_S{step:02d}_verify").exists()
    assert [p.name for p in trace.last_files] == [
        f"I5_S{step:02d}_op_VERIFY_error_log.txt",
        f"I5_S{step:02d}_op_VERIFY_profile.txt",
    ]
    # one source alone is not enough to reproduce anything either
    step = trace.insert_tester_record(verdict, "", "", "VERIFY", candidate_src="class M: ...")
    error_log = (op_dir / f"I5_S{step:02d}_op_VERIFY_error_log.txt").read_text()
    assert "reference_src, eval_config not given" in error_log
    assert not (op_dir / f"I5_S{step:02d}_verify").exists()


def test_tester_record_states_the_software_versions(tmp_path: Path) -> None:
    from engine import __version__
    from engine.trace.versions import environment_versions

    trace = Trace("op", "1", tmp_path)
    _tester(trace, _verdict(compiled=True, correct=True, speedup=1.0))
    error_log = (tmp_path / "op" / "I1_S01_op_VERIFY_error_log.txt").read_text()
    assert f"recorded with: stark {__version__}" in error_log and ", torch " in error_log
    assert read_index(tmp_path / "op" / INDEX_NAME)[0]["versions"] == environment_versions()
    script = tmp_path / "op" / "I1_S01_verify" / "verify_op.py"
    namespace = runpy.run_path(str(script), run_name="not_main")  # loads, does not run
    recorded = namespace["RECORDED"]
    assert isinstance(recorded, dict)
    assert recorded["versions"]["stark"] == __version__
    assert recorded["versions"] == environment_versions()


def test_plain_torch_candidate_does_not_overwrite_reference(tmp_path: Path) -> None:
    trace = Trace("op", "1", tmp_path)
    _tester(trace, _verdict(compiled=True, correct=False, error="mismatch"))
    names = sorted(p.name for p in (tmp_path / "op" / "I1_S01_verify").iterdir())
    assert names == ["op_torch.py", "op_torch_new.py", "verify_op.py"]


def test_unreadable_verdict_and_bad_profile_are_kept(tmp_path: Path) -> None:
    trace = Trace("op", "1", tmp_path)
    trace.insert_tester_record(
        "not json",
        "log",
        "profile as plain text",
        reference_src="r",
        candidate_src="c",
        eval_config={"device": "cpu"},
    )
    log = (tmp_path / "op" / "I1_S01_op_VERIFY_error_log.txt").read_text()
    assert "unreadable" in log and "not json" in log
    profile = json.loads((tmp_path / "op" / "I1_S01_op_VERIFY_profile.txt").read_text())
    assert profile == {"unparsed_profile": "profile as plain text"}
    assert read_index(tmp_path / "op" / INDEX_NAME)[0]["verdict"] == "unknown"


def test_conductor_records_use_current_step(tmp_path: Path) -> None:
    trace = Trace("op", "9", tmp_path)
    trace.insert_conductor_record("SelectNode", "pool", "selected node 0 (exploit)")  # step 0
    trace.insert_designer_or_coder_record(PLAN_REPLY, "p", "", ActionType.DO_DESIGNER)
    trace.insert_conductor_record("CheckDesigner", "reply", '{"ok": true}')
    trace.insert_conductor_record("CheckDesigner", "reply 2", '{"ok": false}')  # same step again
    trace.insert_conductor_record("AnalyzeError", "tail", "analysis")
    conductor = tmp_path / "op" / "conductor"
    assert sorted(p.name for p in conductor.iterdir()) == [
        "I9_S00_op_SelectNode_prompt.txt",
        "I9_S00_op_SelectNode_result.txt",
        "I9_S01_op_AnalyzeError_prompt.txt",
        "I9_S01_op_AnalyzeError_result.txt",
        "I9_S01_op_CheckDesigner_prompt.txt",
        "I9_S01_op_CheckDesigner_prompt_2.txt",
        "I9_S01_op_CheckDesigner_result.txt",
        "I9_S01_op_CheckDesigner_result_2.txt",
    ]
    assert (conductor / "I9_S01_op_CheckDesigner_result_2.txt").read_text() == '{"ok": false}'
    assert trace.current_step == 1  # conductor records never allocate a step
    selection = read_index(tmp_path / "op" / INDEX_NAME)[0]
    assert selection["action"] == "SelectNode" and selection["mode"] == "exploit"


def test_record_selection_helper(tmp_path: Path) -> None:
    trace = Trace("op", "9", tmp_path)
    trace.record_selection(4, "explore", "leaf sampled with leaf_bias", round=3)
    record = read_index(tmp_path / "op" / INDEX_NAME)[0]
    assert (record["node_id"], record["round"], record["mode"]) == (4, 3, "explore")
    with pytest.raises(ValueError, match="explore or exploit"):
        trace.record_selection(4, "random")


def test_bad_arguments_are_rejected(tmp_path: Path) -> None:
    trace = Trace("op", "1", tmp_path)
    with pytest.raises(ValueError, match="unknown conductor kind"):
        trace.insert_conductor_record("Gossip", "p", "r")
    with pytest.raises(ValueError, match="unknown action type"):
        trace.insert_designer_or_coder_record("r", "p", "", "DO_NOTHING")
    with pytest.raises(ValueError, match="insert_tester_record"):
        trace.insert_designer_or_coder_record("r", "p", "", ActionType.VERIFY)
    with pytest.raises(TypeError, match="prompt must be a str"):
        trace.insert_designer_or_coder_record("r", b"p", "", ActionType.DO_CODER)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="device"):
        _tester_cfg = {"device": "tpu"}
        trace.insert_tester_record(
            "{}", "", "", reference_src="", candidate_src="", eval_config=_tester_cfg
        )
    assert trace.current_step == 0
    assert not any((tmp_path / "op").glob("I1_S*"))  # nothing half-recorded


def test_steps_continue_across_resume(tmp_path: Path) -> None:
    first = Trace("op", "42", tmp_path)
    first.insert_designer_or_coder_record(PLAN_REPLY, "p", "", ActionType.DO_DESIGNER)
    first.insert_designer_or_coder_record(PLAN_REPLY, "p", "", ActionType.DO_CODER)
    _tester(first, _verdict(compiled=True, correct=True, speedup=1.1))
    resumed = Trace("op", "42", tmp_path)
    assert resumed.current_step == 3
    resumed.insert_conductor_record("SelectNode", "pool", "node 1 (exploit)")  # attaches to S03
    assert (tmp_path / "op" / "conductor" / "I42_S03_op_SelectNode_result.txt").exists()
    assert resumed.insert_designer_or_coder_record("r", "p", "", "FIX_CODER") == 4
    # another task in the same op directory numbers its own steps
    other = Trace("op", "43", tmp_path)
    assert other.insert_designer_or_coder_record("r", "p", "", "DO_CODER") == 1


def test_resume_finds_steps_without_index(tmp_path: Path) -> None:
    first = Trace("op", "42", tmp_path)
    for _ in range(11):
        first.insert_designer_or_coder_record("r", "p", "", ActionType.DO_CODER)
    (tmp_path / "op" / INDEX_NAME).unlink()  # lost index: file names still tell
    assert (
        Trace("op", "42", tmp_path).insert_designer_or_coder_record("r", "p", "", "DO_CODER") == 12
    )
    assert (tmp_path / "op" / "I42_S12_op_DO_CODER_result.txt").exists()


def test_two_traces_on_one_dir_never_share_a_step(tmp_path: Path) -> None:
    traces = [Trace("op", "5", tmp_path) for _ in range(2)]
    steps: list[int] = []
    lock = threading.Lock()

    def work(trace: Trace) -> None:
        for _ in range(10):
            step = trace.insert_designer_or_coder_record("r", "p", "", ActionType.DO_CODER)
            with lock:
                steps.append(step)

    threads = [threading.Thread(target=work, args=(t,)) for t in traces for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(steps) == list(range(1, 41))
    assert len(read_index(tmp_path / "op" / INDEX_NAME)) == 40


def test_index_records_node_round_verdict(tmp_path: Path) -> None:
    trace = Trace("op", "1", tmp_path)
    trace.insert_designer_or_coder_record("r", "p", "", ActionType.DO_CODER, node_id=0, round=0)
    _tester(
        trace, _verdict(compiled=False, error="nvcc failed", stage="compile"), node_id=0, round=0
    )
    records = read_index(tmp_path / "op" / INDEX_NAME)
    assert [(r["step"], r["action"], r["node_id"], r["round"]) for r in records] == [
        (1, "DO_CODER", 0, 0),
        (2, "VERIFY", 0, 0),
    ]
    assert records[1]["verdict"] == "compile error" and records[1]["error"] == "nvcc failed"
    assert records[1]["files"][0] == "I1_S02_op_VERIFY_error_log.txt"


def test_role_mapping() -> None:
    assert action_for_role("plan") is ActionType.DO_DESIGNER
    assert action_for_role("seed") is ActionType.DO_CODER
    assert action_for_role("debug") is ActionType.FIX_CODER
    assert action_for_role("benchmark") is ActionType.VERIFY
    assert ActionType["FIX_DESIGNER"] == "FIX_DESIGNER"
    with pytest.raises(ValueError):
        action_for_role("poet")


def test_conductor_json_result_fills_node_round_and_mode(tmp_path: Path) -> None:
    trace = Trace("op", "1", tmp_path)
    reason = {"round": 4, "node_id": 2, "mode": "explore", "source": "leaves"}
    trace.insert_conductor_record("SelectNode", "explore: leaf 2", json.dumps(reason, indent=2))
    record = read_index(tmp_path / "op" / INDEX_NAME)[0]
    assert (record["node_id"], record["round"], record["mode"]) == (2, 4, "explore")
    assert record["detail"] == '{"source": "leaves"}'
