"""The kernel writer's debug step: read the real failure of a kernel it wrote and make one
targeted edit of its state.

Which group failed: a group function named in the log (`g3_...`), else the group whose
`// --- group gN` section holds a compiler error's line, else the group the last move
changed. What to do, by failure class (`engine.agents.failures.classify`):

| failure | edit |
|---|---|
| compiler error in vectorised code (`Vectorized`, `at::vec`, SLEEF) | vector aten -> simd |
| mismatch in a reduction with float accumulation | Kahan (compensated) accumulation |
| timeout or any failure right after a schedule change | revert that change, remember it |
| anything else in a group | hand the group back to torch ops, remember why |

A failure with no group fused (the bare graph replay) is not the kernel writer's to fix: it
says so rather than passing the reference off as a fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from engine.agents.failures import classify, first_line
from engine.agents.kernels.analysis import KernelAnalysis
from engine.agents.kernels.schedule import resolve
from engine.agents.kernels.state import FailedSchedule, KernelState

_GROUP_NAME = re.compile(r"\b(g\d+)_[A-Za-z0-9_]*")
_COMPILER_LINE = re.compile(r"main\.(?:cpp|cu):(\d+)(?::\d+)?:\s*(?:fatal )?error", re.I)
_BUILD_FAILED = re.compile(r"Error building extension|ninja: build stopped", re.I)
_VECTOR_CODE = re.compile(r"Vectorized|at::vec|Sleef|vec::", re.I)
_SOURCE_ASSIGNMENT = "_STARK_CPP_SOURCE = "
_SECTION = re.compile(r"// --- group (g\d+)\b")
_SECTION_END = re.compile(r"// --- end (g\d+)\b")


@dataclass(frozen=True, slots=True)
class KernelFix:
    """A fixed state and why, or (state None) the reason the kernel writer cannot fix it."""

    state: KernelState | None
    reason: str
    failure: str  # the failure class


def debug_kernel(
    analysis: KernelAnalysis,
    state: KernelState,
    code: str,
    log: str,
    last_move: dict[str, Any] | None,
) -> KernelFix:
    failure = failure_class(log)
    if not state.fused:
        return KernelFix(
            None,
            f"the failing kernel fuses no group (it replays the reference's graph), so no "
            f"generated kernel caused this {failure} failure ({first_line(log)})",
            failure,
        )
    group = culprit(state, code, log, last_move)
    kind = analysis.group(group).kind
    schedule = resolve(state.backend, kind, state.schedule_of(group))
    move = last_move or {}
    if failure == "compile" and schedule.get("vector") == "aten" and _VECTOR_CODE.search(log):
        return _set(
            state, group, kind, "vector", "simd", failure, "the vectorised code did not build"
        )
    if failure == "numerics" and kind == "reduction" and schedule.get("accumulate") == "float":
        return _set(
            state,
            group,
            kind,
            "accumulate",
            "kahan",
            failure,
            "float accumulation lost precision (reassociated sums)",
        )
    if move.get("kind") == "schedule" and move.get("group") == group:
        key, value, previous = move.get("key"), move.get("value"), move.get("previous")
        if isinstance(key, str):
            default = resolve(state.backend, kind, {})[key]
            reverted = state.with_schedule(group, key, previous, default).recording(
                FailedSchedule(group, key, value, failure)
            )
            return KernelFix(
                reverted,
                f"{group}'s {key}={value!r} broke it ({failure}: {first_line(log)}); back to "
                f"{key}={previous!r}",
                failure,
            )
    why = f"{failure}: {first_line(log)}"
    return KernelFix(
        state.handing_back(group, why),
        f"{group} ({analysis.group(group).summary}) failed ({why}); it goes back to torch ops",
        failure,
    )


def failure_class(log: str) -> str:
    """`classify`, except that a compiler's `file:line: error:` is always a compile failure
    (a C++ error message may mention dtypes or strides without being about them)."""
    if _COMPILER_LINE.search(log) or _BUILD_FAILED.search(log):
        return "compile"
    return classify(log)


def culprit(state: KernelState, code: str, log: str, last_move: dict[str, Any] | None) -> str:
    """The fused group the failure belongs to (see the module docstring for the order)."""
    for match in _GROUP_NAME.finditer(log):
        if match.group(1) in state.fused:
            return match.group(1)
    line = _COMPILER_LINE.search(log)
    if line:
        found = group_at_source_line(code, int(line.group(1)))
        if found in state.fused:
            return found
    moved = (last_move or {}).get("group")
    if isinstance(moved, str) and moved in state.fused:
        return moved
    return state.fused[-1]


def group_at_source_line(code: str, line: int) -> str | None:
    """The group whose `// --- group gN` section holds line `line` of the extension's
    main.cpp. The module's C++ is one raw string (`_STARK_CPP_SOURCE = r\"\"\"...`) that
    load_inline writes out as is (no implicit headers), so main.cpp line L is the module line
    of that assignment plus L - 1."""
    lines = code.splitlines()
    source_line = next(
        (n for n, text in enumerate(lines, start=1) if text.startswith(_SOURCE_ASSIGNMENT)), None
    )
    if source_line is None:
        return None
    target = source_line + line - 1
    current: str | None = None
    for number, text in enumerate(lines, start=1):
        opened = _SECTION.search(text)
        if opened:
            current = opened.group(1)
        if number == target:
            return current
        if _SECTION_END.search(text):
            current = None
    return None


def _set(
    state: KernelState,
    group: str,
    kind: str,
    key: str,
    value: Any,
    failure: str,
    why: str,
) -> KernelFix:
    current = resolve(state.backend, kind, state.schedule_of(group))[key]
    default = resolve(state.backend, kind, {})[key]
    fixed = state.with_schedule(group, key, value, default).recording(
        FailedSchedule(group, key, current, failure)
    )
    return KernelFix(fixed, f"{group}: {why}; {key} {current} -> {value}", failure)
