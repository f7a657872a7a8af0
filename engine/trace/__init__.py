"""The trace: every LLM step and every verification of a search, on disk.

`Trace(op_name, task_id, log_dir)` writes under `log_dir/<op_name>/`; see
docs/trace.md for the layout and how to reproduce a recorded verdict.
"""

from engine.trace.actions import ActionType, ConductorKind, action_for_role
from engine.trace.index import verdict_label
from engine.trace.recorder import Trace
from engine.trace.sanitize import redact, sanitize_name

__all__ = [
    "ActionType",
    "ConductorKind",
    "Trace",
    "action_for_role",
    "redact",
    "sanitize_name",
    "verdict_label",
]
