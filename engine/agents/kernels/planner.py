"""The kernel writer's plan step: the one-step moves from a parent's `KernelState`, scored.

Moves: fuse a group the parent leaves to torch (or fuse it instead of an overlapping one),
change one schedule parameter of a fused group, hand a fused group back to torch ops, switch
the GPU backend (Triton <-> CUDA C), or run the whole reference under torch.compile (one
move among others, so the search can compare it with the generated kernels).

Scores: a group's prior value is the memory passes fusion saves (eager PyTorch writes and
re-reads the tensor between every two ops it fuses), weighted by the share of the parent's
profiled time its operators take; schedules and hand-backs are explorations with lower
priors. A state tried anywhere in the request's history (read from the nodes' headers), or
a schedule value the lineage recorded as failing, is never proposed again. Ties are broken
by seeded noise, so a resumed run chooses alike.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from engine.agents.base import HistoryItem
from engine.agents.kernels.analysis import KernelAnalysis
from engine.agents.kernels.ir import Backend, FusionGroup
from engine.agents.kernels.schedule import CHOICES, neighbours, resolve
from engine.agents.kernels.state import KernelState
from engine.agents.transforms import read_header

MoveKind = Literal["fuse", "replace", "schedule", "unfuse", "backend", "compile", "keep"]
NOISE = 0.05
COMPILE_TRANSFORM = "compile:default"
_SCHEDULE_PRIOR = {
    "grain": 0.35,
    "unroll": 0.3,
    "loop_order": 0.3,
    "block": 0.35,
    "num_warps": 0.3,
    "rows": 0.25,
    "threads": 0.3,
    "vector": 0.12,  # the fastest path ("aten", float4) is the default: stepping down is a probe
    "accumulate": 0.05,  # only ever slower; the debug step uses it for numerics
}


@dataclass(slots=True)
class KernelMove:
    kind: MoveKind
    state: KernelState  # the resulting kernel (unchanged for "compile"/"keep")
    title: str
    group: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)  # schedule key/value/previous ...
    reasons: list[str] = field(default_factory=list)
    score: float = 0.0

    @property
    def transformations(self) -> list[str]:
        return [COMPILE_TRANSFORM] if self.kind == "compile" else []

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "group": self.group, **self.detail}


def state_of(code: str | None, default_backend: Backend) -> KernelState | None:
    """The kernel state in a module's header; None when the module is no kernel of ours."""
    meta = read_header(code)
    if meta is None:
        return None
    return KernelState.from_json(meta.get("kernel"))


def parent_state(code: str | None, analysis: KernelAnalysis) -> KernelState:
    """The parent's state, or an empty one (seed, torch.compile node, foreign kernel)."""
    found = state_of(code, analysis.backends[0])
    if found is None or found.backend not in analysis.backends:
        return KernelState(analysis.backends[0])
    return found


def tried_states(history: list[HistoryItem], analysis: KernelAnalysis) -> tuple[set[str], bool]:
    """Keys of the states in the history, and whether torch.compile was tried."""
    keys: set[str] = set()
    compiled = False
    for item in history:
        meta = read_header(item.code) or {}
        state = KernelState.from_json(meta.get("kernel"))
        if state is not None:
            keys.add(state.key())
        transforms = meta.get("transforms")
        if isinstance(transforms, list) and COMPILE_TRANSFORM in transforms:
            compiled = True
    return keys, compiled


def choose_kernel_move(
    analysis: KernelAnalysis,
    parent: KernelState,
    history: list[HistoryItem],
    profile: list[dict[str, Any]] | None,
    rng: random.Random,
    *,
    parent_is_compile: bool = False,
) -> KernelMove:
    """The best-scoring untried move from `parent` (a "keep" move when nothing is left)."""
    tried, compiled = tried_states(history, analysis)
    tried.add(parent.key())
    moves = [m for m in all_moves(analysis, parent, profile) if m.state.key() not in tried]
    if not compiled and not parent_is_compile:
        fused_any = bool(parent.fused)
        moves.append(
            KernelMove(
                "compile",
                parent,
                "torch.compile the whole reference (the generated kernels' yardstick)",
                reasons=["torch.compile has not been tried on this reference"],
                score=0.15 if fused_any else 0.55,
            )
        )
    if not moves:
        moves = two_step_moves(analysis, parent, profile, tried)
    if not moves:
        return KernelMove("keep", parent, "keep the parent", reasons=["nothing left to try"])
    for move in moves:
        move.score += rng.gauss(0.0, NOISE)
    return max(moves, key=lambda m: m.score)


def two_step_moves(
    analysis: KernelAnalysis,
    parent: KernelState,
    profile: list[dict[str, Any]] | None,
    tried: set[str],
) -> list[KernelMove]:
    """Untried states two moves from `parent`, when every one-step state was tried: e.g.
    a fused group at a new schedule from a parent whose fused child lost to eager (the
    search keeps expanding the better parent, and would otherwise re-emit its code)."""
    found: dict[str, KernelMove] = {}
    for first in all_moves(analysis, parent, profile):
        for second in all_moves(analysis, first.state, profile):
            key = second.state.key()
            if key in tried or key in found:
                continue
            found[key] = KernelMove(
                second.kind,
                second.state,
                f"{first.title}, then {second.title.split(': ', 1)[-1]}",
                second.group,
                {**second.detail, "via": first.to_json()},
                [*first.reasons, *second.reasons, "every one-step move was tried"],
                score=0.5 * second.score + 0.1 * first.score,
            )
    return list(found.values())


def all_moves(
    analysis: KernelAnalysis, parent: KernelState, profile: list[dict[str, Any]] | None
) -> list[KernelMove]:
    backend = parent.backend
    usable = {g.id: g for g in analysis.usable(backend) if g.id not in parent.torch_only}
    fused = [analysis.group(g) for g in parent.fused]
    moves: list[KernelMove] = []
    for group in usable.values():
        if group.id in parent.fused:
            continue
        overlapping = [f for f in fused if set(f.nodes) & set(group.nodes)]
        value = group_value(group, profile)
        kept = [f.id for f in fused if f not in overlapping]
        state = parent.with_fused([*kept, group.id])
        if not overlapping:
            moves.append(
                KernelMove(
                    "fuse",
                    state,
                    f"fuse {group.id} ({group.summary}) into one {backend} kernel",
                    group.id,
                    reasons=[f"saves ~{passes_saved(group)} memory passes"],
                    score=1.0 + value,
                )
            )
            continue
        replaced = ", ".join(f.id for f in overlapping)
        lost = sum(group_value(f, profile) for f in overlapping)
        moves.append(
            KernelMove(
                "replace",
                state,
                f"fuse {group.id} ({group.summary}) instead of {replaced}",
                group.id,
                {"replaced": [f.id for f in overlapping]},
                [f"a different grouping of the same ops than {replaced}"],
                score=0.3 + value - lost,
            )
        )
    for group in fused:
        current = resolve(backend, group.kind, parent.schedule_of(group.id))
        for key, value in neighbours(backend, group.kind, current):
            if parent.schedule_failed(group.id, key, value):
                continue
            default = resolve(backend, group.kind, {})[key]
            moves.append(
                KernelMove(
                    "schedule",
                    parent.with_schedule(group.id, key, value, default),
                    f"schedule {group.id}: {key} {current[key]} -> {value}",
                    group.id,
                    {"key": key, "value": value, "previous": current[key]},
                    [f"tune {key} of {group.id}"],
                    score=_SCHEDULE_PRIOR.get(key, 0.2)
                    / (1 + _distance(backend, key, current[key], value)),
                )
            )
        moves.append(
            KernelMove(
                "unfuse",
                parent.with_fused([g for g in parent.fused if g != group.id]),
                f"hand {group.id} ({group.summary}) back to torch ops",
                group.id,
                reasons=["check that the fused kernel beats the ops it replaces"],
                score=0.08,
            )
        )
    for other in analysis.backends:
        if other == backend or not parent.fused:
            continue
        if all(g in {u.id for u in analysis.usable(other)} for g in parent.fused):
            moves.append(
                KernelMove(
                    "backend",
                    parent.with_backend(other),
                    f"write the fused groups as {other} kernels instead of {backend}",
                    detail={"backend": other, "previous": backend},
                    reasons=[f"compare {other} with {backend} on the same groups"],
                    score=0.3,
                )
            )
    return moves


def passes_saved(group: FusionGroup) -> int:
    """Round trips through memory that eager PyTorch makes and one fused pass does not."""
    fused_ops = len(group.nodes) - (1 if group.kind == "epilogue" else 0)
    return max(fused_ops - 1, 0) + (1 if group.kind == "epilogue" else 0)


def group_value(group: FusionGroup, profile: list[dict[str, Any]] | None) -> float:
    """How much fusing this group is likely worth: passes saved, weighted by profile share."""
    base = 0.25 + 0.5 * passes_saved(group)
    if group.kind == "reduction":
        base += 0.25  # a reduction written by hand also skips its temporaries
    share = profile_share(group, profile)
    return base * (0.5 + share) if share is not None else base


def profile_share(group: FusionGroup, profile: list[dict[str, Any]] | None) -> float | None:
    """The fraction of the parent's profiled time in ops whose names match the group's."""
    if not profile:
        return None
    names = {n.split("_")[0] for n in group.nodes}  # fx names: "relu_1" -> "relu"
    total = 0.0
    for entry in profile:
        op = re.sub(r"^(aten::)?_*", "", str(entry.get("name", "")))
        percent = entry.get("percent")
        if isinstance(percent, int | float) and any(op.startswith(n) for n in names):
            total += float(percent)
    return min(total / 100.0, 1.0)


def _distance(backend: str, key: str, old: Any, new: Any) -> int:
    values = list(CHOICES[backend].get(key, ()))
    if old in values and new in values:
        return abs(values.index(old) - values.index(new)) - 1
    return 0
