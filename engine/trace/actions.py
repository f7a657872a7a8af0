"""The kinds of step a trace records. Values equal names so that file names, the
index and `ActionType(name)` round-trip without a lookup table."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

_Kind = TypeVar("_Kind", bound=StrEnum)


def _parse_member(kind: type[_Kind], value: _Kind | str, what: str) -> _Kind:
    if isinstance(value, kind):
        return value
    try:
        return kind(str(value))
    except ValueError:
        valid = ", ".join(member.value for member in kind)
        raise ValueError(f"unknown {what} {value!r}; expected one of {valid}") from None


class ActionType(StrEnum):
    """One LLM call or one verification; each allocates a new step."""

    DO_DESIGNER = "DO_DESIGNER"  # plan: a plan JSON plus anchored code
    FIX_DESIGNER = "FIX_DESIGNER"  # repair of a malformed plan reply
    DO_CODER = "DO_CODER"  # seed or code: a full ModelNew file
    FIX_CODER = "FIX_CODER"  # debug, or repair of a malformed code reply
    VERIFY = "VERIFY"  # a benchmarker verdict

    @classmethod
    def parse(cls, value: ActionType | str) -> ActionType:
        """Accept the enum or its name, with a clear error listing the valid ones."""
        return _parse_member(cls, value, "action type")


class ConductorKind(StrEnum):
    """The search's own decisions; they share the step of the action they belong to."""

    CheckDesigner = "CheckDesigner"  # plan check: valid JSON, anchors present
    CheckCoder = "CheckCoder"  # code check: code extracted, ModelNew present, static flags
    AnalyzeError = "AnalyzeError"  # analysis of a failure before debug
    SelectNode = "SelectNode"  # which node was selected, and why (explore or exploit)

    @classmethod
    def parse(cls, value: ConductorKind | str) -> ConductorKind:
        """Accept the enum or its name, with a clear error listing the valid ones."""
        return _parse_member(cls, value, "conductor kind")


# Roles of the search engine (engine/events.py LLMCallStarted.role) onto action types.
ROLE_ACTIONS: dict[str, ActionType] = {
    "plan": ActionType.DO_DESIGNER,
    "seed": ActionType.DO_CODER,
    "code": ActionType.DO_CODER,
    "debug": ActionType.FIX_CODER,
    "plan_repair": ActionType.FIX_DESIGNER,
    "code_repair": ActionType.FIX_CODER,
    "repair": ActionType.FIX_CODER,
    "benchmark": ActionType.VERIFY,
}


def action_for_role(role: str) -> ActionType:
    """The action type a search role records under."""
    try:
        return ROLE_ACTIONS[role]
    except KeyError:
        valid = ", ".join(ROLE_ACTIONS)
        raise ValueError(f"unknown role {role!r}; expected one of {valid}") from None
