"""Read a trace back as a timeline: one row per recorded action or decision.

The index (`trace_index.jsonl`) is the primary source; file names are the
fallback, so a record whose index line was lost (a kill between the files and
the index append) still shows up, with its file time and what the name says.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.trace.actions import ActionType, ConductorKind
from engine.trace.index import CONDUCTOR_DIR, INDEX_NAME, read_index, verdict_label

_ACTIONS = "|".join(a.value for a in ActionType)
_KINDS = "|".join(k.value for k in ConductorKind)
_ACTION_PARAMS = "result|prompt|reasoning|error_log|profile"
# Any op: only used to recognise an op directory.
_ACTION_FILE = re.compile(
    rf"^I[A-Za-z0-9_-]+_S\d+_[A-Za-z0-9_-]+_(?:{_ACTIONS})_(?:{_ACTION_PARAMS})\.txt$"
)
_VERDICT_JSON = re.compile(
    r"^==== verdict \(EvalResult JSON.*?====\n(?P<json>\{.*?\n\})", re.S | re.M
)


@dataclass(slots=True)
class TimelineRow:
    ts: float
    op: str
    task_id: str
    step: int
    kind: str  # action | conductor
    action: str
    node_id: int | None = None
    round: int | None = None
    verdict: str | None = None  # correct | incorrect | compile error | unknown (VERIFY only)
    speedup: float | None = None
    detail: str | None = None  # error first line, or why a node was selected
    mode: str | None = None  # explore | exploit (SelectNode)
    files: list[str] = field(default_factory=list)  # relative to the trace root
    source: str = "index"  # index | files

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_op_dir(path: Path) -> bool:
    if (path / INDEX_NAME).is_file():
        return True
    return (
        any(_ACTION_FILE.match(entry.name) for entry in path.iterdir() if entry.is_file())
        or (path / CONDUCTOR_DIR).is_dir()
    )


def find_op_dirs(path: Path) -> list[Path]:
    """Op directories under a task directory (`<task>/trace/<op>`), a trace
    directory (`<trace>/<op>`) or an op directory itself."""
    for root in (path / "trace", path):
        if not root.is_dir():
            continue
        if _is_op_dir(root):
            return [root]
        found = sorted(p for p in root.iterdir() if p.is_dir() and _is_op_dir(p))
        if found:
            return found
    return []


def _verdict_from_error_log(path: Path) -> dict[str, Any] | None:
    try:
        match = _VERDICT_JSON.search(path.read_text(encoding="utf-8", errors="replace"))
        data = json.loads(match["json"]) if match else None
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _file_patterns(op: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Name patterns for one op directory: knowing the op makes `I{task}_S{step}_{op}`
    unambiguous even when the task id itself contains something like `_S12`."""
    head = rf"^I(?P<task>[A-Za-z0-9_-]+)_S(?P<step>\d+)_{re.escape(op)}_"
    return (
        re.compile(rf"{head}(?P<action>{_ACTIONS})_(?P<param>{_ACTION_PARAMS})\.txt$"),
        re.compile(rf"{head}(?P<action>{_KINDS})_(?P<param>prompt|result)(?P<n>_\d+)?\.txt$"),
    )


def _rows_from_files(
    op_dir: Path, root: Path, known: set[tuple[str, int, str]]
) -> list[TimelineRow]:
    """Rows for records whose index line is missing, grouped by (task, step, action)."""
    groups: dict[tuple[str, int, str, str], list[Path]] = {}
    action_file, conductor_file = _file_patterns(op_dir.name)
    for directory, pattern, kind in (
        (op_dir, action_file, "action"),
        (op_dir / CONDUCTOR_DIR, conductor_file, "conductor"),
    ):
        if not directory.is_dir():
            continue
        for entry in sorted(directory.iterdir()):
            match = pattern.match(entry.name)
            if not match:
                continue
            key = (match["task"], int(match["step"]), match["action"])
            if key in known:
                continue
            suffix = match.groupdict().get("n") or ""
            groups.setdefault((*key, kind + suffix), []).append(entry)
    rows: list[TimelineRow] = []
    for (task, step, action, kind), paths in groups.items():
        verdict = speedup = detail = None
        if action == ActionType.VERIFY.value:
            data = next(
                (_verdict_from_error_log(p) for p in paths if p.name.endswith("_error_log.txt")),
                None,
            )
            verdict, speedup = verdict_label(data), (data or {}).get("speedup")
            detail = ((data or {}).get("error") or "").splitlines()[0:1]
            detail = detail[0] if detail else None
        rows.append(
            TimelineRow(
                ts=max(p.stat().st_mtime for p in paths),
                op=op_dir.name,
                task_id=task,
                step=step,
                kind=kind.split("_")[0],
                action=action,
                verdict=verdict,
                speedup=speedup,
                detail=detail,
                files=[str(p.relative_to(root)) for p in paths],
                source="files",
            )
        )
    return rows


def load_timeline(path: Path) -> tuple[Path, list[TimelineRow]]:
    """(trace root, rows sorted by task, step and time). Raises FileNotFoundError
    when there is no trace under `path`."""
    op_dirs = find_op_dirs(path)
    if not op_dirs:
        raise FileNotFoundError(f"no trace found in {path} (expected {path}/trace/<op>/)")
    root = op_dirs[0].parent  # file paths in rows are relative to it: "<op>/<file>"
    rows: list[TimelineRow] = []
    for op_dir in op_dirs:
        known: set[tuple[str, int, str]] = set()
        for record in read_index(op_dir / INDEX_NAME):
            files = [str((op_dir / f).relative_to(root)) for f in record.get("files") or []]
            key = (str(record.get("task_id")), record["step"], str(record.get("action")))
            known.add(key)
            rows.append(
                TimelineRow(
                    ts=float(record.get("ts") or 0.0),
                    op=str(record.get("op") or op_dir.name),
                    task_id=key[0],
                    step=key[1],
                    kind=str(record.get("kind") or "action"),
                    action=key[2],
                    node_id=record.get("node_id"),
                    round=record.get("round"),
                    verdict=record.get("verdict"),
                    speedup=record.get("speedup"),
                    detail=record.get("error") or record.get("detail"),
                    mode=record.get("mode"),
                    files=files,
                )
            )
        rows.extend(_rows_from_files(op_dir, root, known))
    rows.sort(key=lambda r: (r.op, r.task_id, r.step, r.kind != "action", r.ts))
    return root, rows


def summarize(rows: list[TimelineRow]) -> dict[str, Any]:
    """Counts and the best correct verification, for the footer and --json."""
    verifies = [r for r in rows if r.action == ActionType.VERIFY.value]
    correct = [r for r in verifies if r.verdict == "correct"]
    best = max(
        (r for r in correct if isinstance(r.speedup, int | float)),
        key=lambda r: r.speedup or 0.0,
        default=None,
    )
    return {
        "steps": len({(r.op, r.task_id, r.step) for r in rows if r.kind == "action"}),
        "llm_calls": sum(1 for r in rows if r.kind == "action" and r.action != "VERIFY"),
        "verifications": len(verifies),
        "correct": len(correct),
        "best_speedup": best.speedup if best else None,
        "best_step": best.step if best else None,
        "best_node": best.node_id if best else None,
    }
