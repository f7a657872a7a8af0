"""The trace's append-only index (`trace_index.jsonl`): what file names cannot say (time,
node, round, verdict, speedup), one JSON line per record. The recorder writes it;
`stark trace` and the timeline read it, skipping a torn or foreign line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

INDEX_NAME = "trace_index.jsonl"
INDEX_VERSION = 1
CONDUCTOR_DIR = "conductor"


def verdict_label(verdict: dict[str, Any] | None) -> str:
    """correct / incorrect / compile error / unknown, as the timeline shows it."""
    if not verdict:
        return "unknown"
    if not verdict.get("compiled"):
        return "compile error"
    return "correct" if verdict.get("correct") else "incorrect"


def read_index(path: Path) -> list[dict[str, Any]]:
    """Index records, skipping a torn or foreign line instead of failing."""
    records: list[dict[str, Any]] = []
    try:
        raw = path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return records
    for line in raw.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records
