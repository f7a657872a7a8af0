"""The offline agent's plan policy: which transformation set to try next.

From the parent's set, every one-step move (add a transformation, replacing its group, or
drop one; two steps ahead once every single step was tried) is scored by its prior value
for this reference and device, plus the evidence of the history (escalate what sped up,
avoid what failed, never repeat a tried set), plus seeded noise; a set that already failed
for a permanent reason is never proposed again.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Any

from engine.agents.base import AgentRequest, HistoryItem
from engine.agents.failures import FailureRecord, classify, first_line, merge, records_from_meta
from engine.agents.transforms import (
    CATALOGUE,
    COMPILE_MODES,
    CONFLICTS,
    ORDER,
    ReferenceFeatures,
    applicable,
    header_transforms,
    normalise,
    read_header,
    transforms_in_summary,
)

REPEAT_PENALTY = 5.0
FAILURE_PENALTY = 2.5
NOISE = 0.15  # plan "temperature": spread of the seeded noise added to each score


@dataclass(slots=True)
class Candidate:
    transforms: list[str]
    added: list[str]
    removed: list[str]
    score: float = 0.0
    reasons: tuple[str, ...] = ()


@dataclass(slots=True)
class Attempt:
    """What an offline-written history node tried: its set and the move that made it."""

    transforms: list[str]
    added: list[str] | None  # None: the move is not known (a node without a header)
    removed: list[str]


@dataclass(slots=True)
class Evidence:
    """What the neighbours, the leaders and the parent's lineage tell us about each
    transformation."""

    tried: set[tuple[str, ...]]
    failures: dict[str, int]
    best_gain: dict[str, float]  # log speedup of the best runnable set containing it
    records: list[FailureRecord]

    @property
    def failed_sets(self) -> set[frozenset[str]]:
        """Sets that failed for a permanent reason: their (deterministic) code would again."""
        return {r.failed_set for r in self.records if r.permanent}

    def blocked(self, transforms: list[str]) -> FailureRecord | None:
        """The recorded failure that rules this set out, if any (see FailureRecord.blocks)."""
        chosen = frozenset(transforms)
        for record in self.records:
            risky = record.transform in CATALOGUE and CATALOGUE[record.transform].risky
            if record.blocks(chosen, changes_precision=risky):
                return record
        return None

    def allowed(self, candidates: list[Candidate]) -> list[Candidate]:
        return [c for c in candidates if self.blocked(c.transforms) is None]

    @classmethod
    def from_history(
        cls,
        history: list[HistoryItem],
        device: str,
        features: ReferenceFeatures,
        lineage: list[FailureRecord] | None = None,
    ) -> Evidence:
        evidence = cls(set(), {}, {}, [])
        records: list[FailureRecord] = []
        blamed: dict[str, int] = {}  # failures whose move is unknown: every member is blamed
        for item in history:
            attempt = _attempt_of(item, device, features)
            if attempt is None:
                continue
            names = attempt.transforms
            evidence.tried.add(tuple(names))
            records += records_from_meta(read_header(item.code))  # what its branch learned
            if not item.runnable:
                error = item.error or "failed"
                if attempt.added is None:
                    for name in names:
                        blamed[name] = blamed.get(name, 0) + 1
                    continue
                base = normalise(
                    [t for t in names if t not in attempt.added] + attempt.removed,
                    device,
                    features,
                )
                records += [
                    FailureRecord(name, tuple(base), classify(error), first_line(error))
                    for name in attempt.added
                ]
            elif item.speedup and item.speedup > 0:
                # coarse (half-log steps) so timing noise rarely changes a decision
                gain = round(2 * math.log(item.speedup)) / 2
                for name in names:
                    evidence.best_gain[name] = max(evidence.best_gain.get(name, -9.0), gain)
        evidence.records = merge([r for r in lineage or [] if r.transform in CATALOGUE], records)
        for record in evidence.records:
            evidence.tried.add(tuple(normalise(record.failed_set, device, features)))
            evidence.failures[record.transform] = evidence.failures.get(record.transform, 0) + 1
        for name, count in blamed.items():
            evidence.failures[name] = evidence.failures.get(name, 0) + count
        return evidence


def _attempt_of(item: HistoryItem, device: str, features: ReferenceFeatures) -> Attempt | None:
    """The set a history node ran and the move that made it, when the offline agent wrote it
    (its header) or planned it (its plan title); None for anything else.

    A debug node carries the plan of the node it fixed, so only its header counts."""
    meta = read_header(item.code)
    if meta is not None:
        names = normalise(header_transforms(item.code) or [], device, features)
        added, removed = meta.get("added"), meta.get("removed")
        known = isinstance(added, list) and str(meta.get("role")) != "debug"
        return Attempt(
            names,
            [str(t) for t in added if str(t) in names] if known else None,  # type: ignore[union-attr]
            [str(t) for t in removed] if isinstance(removed, list) else [],
        )
    if item.phase == "debug" or not item.plan_summary:
        return None
    move = parse_plan_title(item.plan_summary)
    if move is None:
        names = normalise(transforms_in_summary(item.plan_summary), device, features)
        return Attempt(names, None, [])
    names, added, removed = (normalise(part, device, features) for part in move)
    return Attempt(names, added, removed)


def parse_plan_title(summary: str) -> tuple[list[str], list[str], list[str]] | None:
    """(set, added, removed) from an offline plan summary "add X (replacing Y) -> A + B: ..."
    or "drop X -> A: ..."; None when the summary is not in that form."""
    if " -> " not in summary:
        return None
    head, rest = summary.split(" -> ", 1)
    result = rest.split(": ", 1)[0].strip()
    names = [] if result == "plain eager" else [t.strip() for t in result.split(" + ")]
    if head.startswith("add "):
        added_text, _, replaced = head[4:].partition(" (replacing ")
        added = [t.strip() for t in added_text.split(",")]
        removed = [t.strip() for t in replaced.rstrip(")").split(",")] if replaced else []
    elif head.startswith("drop "):
        added, removed = [], [t.strip() for t in head[5:].split(",")]
    elif head == "keep":
        added, removed = [], []
    else:
        return None
    if not all(t in CATALOGUE for t in [*names, *added, *removed]):
        return None
    return names, added, removed


def _moves(parent: list[str], device: str, features: ReferenceFeatures) -> list[Candidate]:
    """Every one-step change: add a transformation (replacing its group), or drop one."""
    seen: set[tuple[str, ...]] = {tuple(parent)}
    moves: list[Candidate] = []
    for name in ORDER:
        if name in parent or not applicable(name, device, features):
            continue
        group = CATALOGUE[name].group
        base = [t for t in parent if group is None or CATALOGUE[t].group != group]
        if any(pair <= {*base, name} for pair in CONFLICTS):
            base = [t for t in base if not any(pair <= {t, name} for pair in CONFLICTS)]
        new = normalise([*base, name], device, features)
        if tuple(new) in seen:
            continue
        seen.add(tuple(new))
        moves.append(Candidate(new, [name], [t for t in parent if t not in new]))
    for name in parent:
        new = [t for t in parent if t != name]
        if tuple(new) not in seen:
            seen.add(tuple(new))
            moves.append(Candidate(new, [], [name]))
    return moves


def _two_step_moves(
    parent: list[str], first: list[Candidate], device: str, features: ReferenceFeatures
) -> list[Candidate]:
    """When every single change from this node was tried, look two changes ahead."""
    seen = {tuple(parent)} | {tuple(c.transforms) for c in first}
    moves: list[Candidate] = []
    for step in first:
        for second in _moves(step.transforms, device, features):
            key = tuple(second.transforms)
            if key in seen:
                continue
            seen.add(key)
            added = [t for t in second.transforms if t not in parent]
            removed = [t for t in parent if t not in second.transforms]
            moves.append(Candidate(second.transforms, added, removed))
    return moves or first


def _prior(name: str, features: ReferenceFeatures, device: str) -> float:
    """Expected log speedup of one transformation on this reference and device."""
    fusable = features.forward_ops >= 3 or features.has_reduction
    compile_gain = 0.9 if fusable and not features.has_matmul else 0.35
    if features.has_conv or features.has_matmul:
        compile_gain = max(compile_gain - 0.3, 0.15) + (0.1 if fusable else 0.0)
    priors = {
        "inference_mode": 0.04,
        "compile:default": compile_gain,
        "compile:reduce-overhead": compile_gain + 0.15,
        "compile:max-autotune-no-cudagraphs": compile_gain
        + (0.1 if features.has_matmul or features.has_conv else -0.05),
        "channels_last": 0.2,
        "cudnn_benchmark": 0.15,
        "cuda_graph": 0.25,
        # Lower precision pays on GPU tensor cores; on a CPU fp16 math is mostly converted
        # back and forth, and bf16 helps only GEMM/conv units that support it.
        "bf16_autocast": (0.3 if device == "cuda" else 0.15)
        if features.has_matmul or features.has_conv
        else 0.0,
        "fp16": 0.3 if device == "cuda" else 0.0,
        "tf32": 0.3 if features.has_matmul or features.has_conv else 0.0,
    }
    return priors[name]


def _score(
    cand: Candidate,
    features: ReferenceFeatures,
    device: str,
    evidence: Evidence,
    profile_hint: str,
) -> None:
    reasons: list[str] = []
    score = sum(_prior(t, features, device) for t in cand.transforms)
    for name in cand.added:
        if name in evidence.best_gain:
            score += 0.3 * evidence.best_gain[name]
            reasons.append(
                f"{name} already helped elsewhere (~{math.exp(evidence.best_gain[name]):.1f}x)"
            )
        if evidence.failures.get(name):
            score -= FAILURE_PENALTY * evidence.failures[name]
            reasons.append(f"{name} failed {evidence.failures[name]}x before")
        group = CATALOGUE[name].group
        if group is not None:  # a failed compile mode makes the other modes less attractive
            kin = sum(
                n
                for other, n in evidence.failures.items()
                if other != name and CATALOGUE[other].group == group
            )
            score -= 0.5 * FAILURE_PENALTY * kin
        if CATALOGUE[name].risky:
            score -= 0.5  # only worth it when nothing safer is left
        if name in COMPILE_MODES and profile_hint:
            reasons.append(profile_hint)
    for name in cand.removed:
        if evidence.failures.get(name):
            score += 0.5 * evidence.failures[name]
            reasons.append(f"drop {name}, which failed before")
    if tuple(cand.transforms) in evidence.tried:
        score -= REPEAT_PENALTY
        reasons.append("already tried")
    if cand.added:
        expected = math.exp(sum(_prior(t, features, device) for t in cand.added))
        reasons.insert(
            0, f"untried; expected ~{expected:.1f}x from {', '.join(cand.added)} on {features}"
        )
    cand.score = score
    cand.reasons = tuple(reasons)


def _profile_hint(profile: list[dict[str, Any]] | None) -> str:
    """One line on where the time goes, from the benchmarker's profile of the parent."""
    if not profile:
        return ""
    top = profile[0]
    name = str(top.get("name", "?"))
    percent = top.get("percent")
    share = f" ({float(percent):.0f}% of the time)" if isinstance(percent, int | float) else ""
    if re.search(r"CompiledFxGraph|Compiled Region|CompiledFunction", name):
        return f"profile: the compiled graph already takes the time{share}; try another mode"
    pointwise = sum(
        1
        for p in profile
        if re.search(r"mul|add|gelu|sigmoid|clamp|exp|tanh", str(p.get("name", "")))
    )
    short = name if len(name) <= 40 else name[:37] + "..."
    if pointwise >= 2:
        return f"profile: {pointwise} separate pointwise kernels, top {short}{share}: fuse them"
    return f"profile: top op {short}{share}"


def choose_move(
    request: AgentRequest,
    features: ReferenceFeatures,
    device: str,
    parent: list[str],
    rng: random.Random,
) -> Candidate:
    """The best-scoring allowed move from the parent's set (the parent itself, with the
    reason, when nothing is left to try)."""
    lineage = records_from_meta(read_header(request.parent_code))
    evidence = Evidence.from_history(request.history, device, features, lineage)
    evidence.tried.add(tuple(parent))
    candidates = evidence.allowed(_moves(parent, device, features))
    if all(tuple(c.transforms) in evidence.tried for c in candidates):
        candidates = evidence.allowed(_two_step_moves(parent, candidates, device, features))
    if not candidates:
        return Candidate(parent, [], [], reasons=("nothing left to try",))
    profile_hint = _profile_hint(request.profile)
    for cand in candidates:
        _score(cand, features, device, evidence, profile_hint)
        cand.score += rng.gauss(0.0, NOISE)
    return max(candidates, key=lambda c: c.score)
