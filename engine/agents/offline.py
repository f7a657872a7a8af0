"""The embedded default agent: plays every role deterministically with no network.

It applies real, semantics-preserving transformations of the reference (see
`engine.agents.transforms` for the catalogue) and answers in exactly the format an LLM is
asked for, so the same parser, tree and benchmarker run in both modes.

Policy, in short:
- SEED: the reference run eagerly (speedup ~1x), so the score curve starts honestly.
- PLAN: score the one-step moves from the parent's transformation set (add, swap a compile
  mode, drop a failing one) by prior value for this reference and device, plus evidence from
  the history (escalate what sped up, avoid what failed, never repeat a tried set), plus
  seeded noise. A set that already failed for a permanent reason (in the history, or
  recorded in the parent's header by an earlier debug step) is never proposed again. Nothing
  is staged: a buggy node appears only when a proposed kernel really fails.
- CODE: render the plan's transformations into a `ModelNew` module.
- DEBUG: for its own kernel, read the error log and the header, revert the offending
  transformation, record the failure in the header, and re-render. For a kernel it did not
  write, make a targeted edit (`engine.agents.kernel_fixes`) or refuse with the reason; it
  never passes the reference off as a fix.
- REPAIR: re-emit a well-formed reply.

Replies are `kind="agent"`, with no token counts and zero cost: nothing was spent.

Every random choice comes from an RNG keyed by (seed, round, role, parent), never from
process state, so a resumed run makes the same choices.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import time
from dataclasses import dataclass
from typing import Any

from engine.agents.base import (
    AgentError,
    AgentReply,
    AgentRequest,
    HistoryItem,
    ReplyKind,
    Role,
)
from engine.agents.failures import (
    FailureRecord,
    classify,
    first_line,
    merge,
    records_from_meta,
)
from engine.agents.kernel_fixes import fix_foreign_kernel
from engine.agents.settings import repaired_role
from engine.agents.transforms import (
    CATALOGUE,
    COMPILE_MODES,
    CONFLICTS,
    ORDER,
    ReferenceFeatures,
    analyse_reference,
    anchor,
    applicable,
    header_transforms,
    names_in_text,
    normalise,
    read_header,
    render_module,
    transforms_in_summary,
)

MODEL_NAME = "stark-offline"
REPEAT_PENALTY = 5.0
FAILURE_PENALTY = 2.5
NOISE = 0.15  # plan "temperature": spread of the seeded noise added to each score


@dataclass(slots=True)
class _Answer:
    """A role's reply text, or a refusal (no code) with its reason."""

    text: str
    refusal: str | None = None


@dataclass(slots=True)
class _Candidate:
    transforms: list[str]
    added: list[str]
    removed: list[str]
    score: float = 0.0
    reasons: tuple[str, ...] = ()


class OfflineAgent:
    """Deterministic stand-in for an LLM; see the module docstring for its policy."""

    name = "offline"
    reply_kind: ReplyKind = "agent"

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def model_for(self, role: Role) -> str:
        return MODEL_NAME

    def complete(self, request: AgentRequest) -> AgentReply:
        started = time.perf_counter()
        try:
            features = analyse_reference(request.reference_src)
        except ValueError as exc:
            raise AgentError(f"offline agent: {exc}") from None
        device = "cuda" if str(request.device).startswith("cuda") else "cpu"
        handlers = {
            Role.SEED: self._seed,
            Role.PLAN: self._plan,
            Role.CODE: self._code,
            Role.DEBUG: self._debug,
            Role.REPAIR: self._repair,
        }
        answer = handlers[Role(request.role)](request, features, device)
        return AgentReply(
            text=answer.text,
            reasoning="",
            model=MODEL_NAME,
            prompt_tokens=None,  # no model ran: no tokens to count, none invented
            completion_tokens=None,
            latency_s=time.perf_counter() - started,
            cost_usd=0.0,
            kind=self.reply_kind,
            refusal=answer.refusal,
        )

    # --- roles -------------------------------------------------------------------------------

    def _seed(self, request: AgentRequest, features: ReferenceFeatures, device: str) -> _Answer:
        code = render_module(
            request.reference_src,
            [],
            title="Seed: the reference model, run eagerly (the baseline to improve on).",
            meta={"role": "seed", "added": [], "removed": []},
        )
        return _code_reply("Seed kernel: the reference as is, so the search starts at ~1x.", code)

    def _plan(self, request: AgentRequest, features: ReferenceFeatures, device: str) -> _Answer:
        parent = self._parent_transforms(request, features, device)
        choice = self._choose(request, features, device, parent)
        plan = {
            "title": _title(choice),
            "steps": _steps(choice, parent),
            "transformations": choice.transforms,
            "rationale": "; ".join(choice.reasons) or "untried combination",
        }
        parent_code = request.parent_code or render_module(
            request.reference_src, parent, title="parent", meta={"transforms": parent}
        )
        return _Answer(
            f"Plan: {plan['title']}\n\n"
            f"```json\n{json.dumps(plan, indent=2)}\n```\n\n"
            f"```python\n{anchor(parent_code).rstrip()}\n```\n"
        )

    def _code(self, request: AgentRequest, features: ReferenceFeatures, device: str) -> _Answer:
        parent = self._parent_transforms(request, features, device)
        plan = request.plan or {}
        wanted = plan.get("transformations")
        if isinstance(wanted, list) and all(isinstance(x, str) for x in wanted):
            transforms = normalise(wanted, device, features)
        else:  # a plan without the field (e.g. from an LLM): read names from its text
            transforms = normalise(names_in_text(json.dumps(plan)), device, features) or parent
        added = [t for t in transforms if t not in parent]
        removed = [t for t in parent if t not in transforms]
        title = str(plan.get("title") or _describe(transforms))
        inherited = records_from_meta(read_header(request.parent_code))
        code = render_module(
            request.reference_src,
            transforms,
            title=f"Plan: {title}",
            meta={
                "role": "code",
                "added": added,
                "removed": removed,
                "failures": [r.to_json() for r in inherited],
            },
        )
        return _code_reply(f"Implements the plan: {title}.", code)

    def _debug(self, request: AgentRequest, features: ReferenceFeatures, device: str) -> _Answer:
        log = request.error_log or ""
        code = request.parent_code
        if not code:  # the failed step produced no code at all: there is nothing to replace
            answer = self._seed(request, features, device)
            return _Answer(answer.text.replace("Seed kernel:", "No code to fix; a fresh seed:", 1))
        own = own_transforms(code, request.reference_src)
        if own is None:
            outcome = fix_foreign_kernel(code, log)
            if outcome.code is None:
                return _refusal(outcome.reason)
            return _code_reply(
                f"Targeted edit of the failing kernel: {outcome.reason}.", outcome.code
            )
        broken = normalise(own, device, features)
        if not broken:
            return _refusal(
                f"the failing kernel is the reference run eagerly, so no transformation of "
                f"the offline agent's caused this {classify(log)} failure ({first_line(log)}); "
                "re-emitting it would not fix anything"
            )
        meta = read_header(code) or {}
        last_added = [str(t) for t in meta.get("added", []) if str(t) in broken]  # type: ignore[union-attr]
        fixed, reason = diagnose(log, broken, last_added)
        fixed = normalise(fixed, device, features)
        culprits = [t for t in broken if t not in fixed]
        failure = [
            FailureRecord(
                culprit,
                tuple(t for t in broken if t != culprit),
                classify(log),
                first_line(log),
            )
            for culprit in culprits
        ]
        records = merge(records_from_meta(meta), failure)
        code = render_module(
            request.reference_src,
            fixed,
            title=f"Debug: {reason}",
            meta={
                "role": "debug",
                "added": [],
                "removed": culprits,
                "failures": [r.to_json() for r in records],
            },
        )
        return _code_reply(f"Fix: {reason}.", code)

    def _repair(self, request: AgentRequest, features: ReferenceFeatures, device: str) -> _Answer:
        """Answer afresh, in the format of the role being repaired (the offline agent's own
        replies are well formed, so this only runs when a parser tightens its rules)."""
        role = repaired_role(request)
        handlers = {
            Role.SEED: self._seed,
            Role.PLAN: self._plan,
            Role.CODE: self._code,
            Role.DEBUG: self._debug,
        }
        return handlers[role](request, features, device)

    # --- plan policy -------------------------------------------------------------------------

    def _parent_transforms(
        self, request: AgentRequest, features: ReferenceFeatures, device: str
    ) -> list[str]:
        from_header = header_transforms(request.parent_code)
        if from_header is not None:
            return normalise(from_header, device, features)
        plan = request.parent_plan or {}
        listed = plan.get("transformations")
        if isinstance(listed, list):
            return normalise([str(x) for x in listed], device, features)
        return []

    def rng_for(self, request: AgentRequest, parent: list[str]) -> random.Random:
        """Seeded by what the request is, not by call order: a resumed run chooses alike."""
        key = f"{self.seed}|{request.round}|{request.role}|{','.join(parent)}"
        digest = hashlib.sha256(key.encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    def _choose(
        self,
        request: AgentRequest,
        features: ReferenceFeatures,
        device: str,
        parent: list[str],
    ) -> _Candidate:
        rng = self.rng_for(request, parent)
        lineage = records_from_meta(read_header(request.parent_code))
        evidence = _Evidence.from_history(request.history, device, features, lineage)
        evidence.tried.add(tuple(parent))
        candidates = evidence.allowed(_moves(parent, device, features))
        if all(tuple(c.transforms) in evidence.tried for c in candidates):
            candidates = evidence.allowed(_two_step_moves(parent, candidates, device, features))
        if not candidates:
            return _Candidate(parent, [], [], reasons=("nothing left to try",))
        profile_hint = _profile_hint(request.profile)
        for cand in candidates:
            _score(cand, features, device, evidence, profile_hint)
            cand.score += rng.gauss(0.0, NOISE)
        return max(candidates, key=lambda c: c.score)


@dataclass(slots=True)
class _Attempt:
    """What an offline-written history node tried: its set and the move that made it."""

    transforms: list[str]
    added: list[str] | None  # None: the move is not known (a node without a header)
    removed: list[str]


@dataclass(slots=True)
class _Evidence:
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

    def allowed(self, candidates: list[_Candidate]) -> list[_Candidate]:
        return [c for c in candidates if self.blocked(c.transforms) is None]

    @classmethod
    def from_history(
        cls,
        history: list[HistoryItem],
        device: str,
        features: ReferenceFeatures,
        lineage: list[FailureRecord] | None = None,
    ) -> _Evidence:
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


def _attempt_of(item: HistoryItem, device: str, features: ReferenceFeatures) -> _Attempt | None:
    """The set a history node ran and the move that made it, when the offline agent wrote it
    (its header) or planned it (its plan title); None for anything else.

    A debug node carries the plan of the node it fixed, so only its header counts."""
    meta = read_header(item.code)
    if meta is not None:
        names = normalise(header_transforms(item.code) or [], device, features)
        added, removed = meta.get("added"), meta.get("removed")
        known = isinstance(added, list) and str(meta.get("role")) != "debug"
        return _Attempt(
            names,
            [str(t) for t in added if str(t) in names] if known else None,  # type: ignore[union-attr]
            [str(t) for t in removed] if isinstance(removed, list) else [],
        )
    if item.phase == "debug" or not item.plan_summary:
        return None
    move = parse_plan_title(item.plan_summary)
    if move is None:
        names = normalise(transforms_in_summary(item.plan_summary), device, features)
        return _Attempt(names, None, [])
    names, added, removed = (normalise(part, device, features) for part in move)
    return _Attempt(names, added, removed)


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


def _moves(parent: list[str], device: str, features: ReferenceFeatures) -> list[_Candidate]:
    """Every one-step change: add a transformation (replacing its group), or drop one."""
    seen: set[tuple[str, ...]] = {tuple(parent)}
    moves: list[_Candidate] = []
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
        moves.append(_Candidate(new, [name], [t for t in parent if t not in new]))
    for name in parent:
        new = [t for t in parent if t != name]
        if tuple(new) not in seen:
            seen.add(tuple(new))
            moves.append(_Candidate(new, [], [name]))
    return moves


def _two_step_moves(
    parent: list[str], first: list[_Candidate], device: str, features: ReferenceFeatures
) -> list[_Candidate]:
    """When every single change from this node was tried, look two changes ahead."""
    seen = {tuple(parent)} | {tuple(c.transforms) for c in first}
    moves: list[_Candidate] = []
    for step in first:
        for second in _moves(step.transforms, device, features):
            key = tuple(second.transforms)
            if key in seen:
                continue
            seen.add(key)
            added = [t for t in second.transforms if t not in parent]
            removed = [t for t in parent if t not in second.transforms]
            moves.append(_Candidate(second.transforms, added, removed))
    return moves or first


def _prior(name: str, features: ReferenceFeatures, device: str) -> float:
    """Expected log speedup of one transformation on this reference and device."""
    fusable = features.pointwise_ops >= 3 or features.has_reduction
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
    cand: _Candidate,
    features: ReferenceFeatures,
    device: str,
    evidence: _Evidence,
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


# --- debug diagnosis ----------------------------------------------------------------------

_MISMATCH = re.compile(
    r"mismatch|values differ|tolerance|max abs err|allclose|not close|incorrect", re.I
)
_DTYPE = re.compile(r"half|float16|bfloat16|bf16|fp16|dtype|tf32", re.I)
_LAYOUT = re.compile(
    r"channels_last|memory_format|stride|view size|\.view|contiguous|rank|4D|4-D", re.I
)
_GRAPH = re.compile(r"graph|captur|cudagraph", re.I)
_COMPILE = re.compile(
    r"dynamo|inductor|torch\._|compile|triton|codegen|C\+\+|cpp|timeout|timed out|lowering", re.I
)


def diagnose(log: str, broken: list[str], last_added: list[str]) -> tuple[list[str], str]:
    """Which transformation to revert, given the failure log; returns (fixed set, reason)."""
    precision = [t for t in broken if CATALOGUE[t].group == "precision"]
    compile_name = next((t for t in broken if t in COMPILE_MODES), None)
    if precision and (_MISMATCH.search(log) or _DTYPE.search(log)):
        return [t for t in broken if t not in precision], (
            f"{precision[0]} changed the numerics beyond fp32 tolerance; back to float32"
        )
    if "channels_last" in broken and _LAYOUT.search(log):
        return [t for t in broken if t != "channels_last"], (
            "channels_last broke a layout-dependent op; dropped it"
        )
    if "cuda_graph" in broken and _GRAPH.search(log):
        return [t for t in broken if t != "cuda_graph"], (
            "CUDA graph capture failed; run without the graph"
        )
    if compile_name and _COMPILE.search(log):
        if compile_name != "compile:default":
            fixed = [("compile:default" if t == compile_name else t) for t in broken]
            return fixed, f"{compile_name} failed to build or run; fall back to compile:default"
        return [t for t in broken if t != compile_name], (
            "torch.compile failed on this model; run it eagerly"
        )
    if precision:
        return [t for t in broken if t not in precision], (
            f"unexplained failure with {precision[0]}; back to float32 first"
        )
    suspect = last_added[-1] if last_added else (broken[-1] if broken else None)
    if suspect is None:
        return [], "the failure is not in a transformation; re-emit the plain eager model"
    return [
        t for t in broken if t != suspect
    ], f"reverted {suspect}, the last change before the failure"


# --- reply text ---------------------------------------------------------------------------


def _code_reply(lead: str, code: str) -> _Answer:
    return _Answer(f"{lead}\n\n```python\n{code.rstrip()}\n```\n")


def _refusal(reason: str) -> _Answer:
    """A debug answer with no code: the search records it instead of benchmarking."""
    return _Answer(f"Cannot fix this kernel: {reason}.\n", refusal=reason)


def own_transforms(code: str, reference_src: str) -> list[str] | None:
    """The header's transformation set when `code` is exactly what the offline agent renders
    for it from this reference (an edited or foreign kernel gives None)."""
    names = header_transforms(code)
    if names is None:
        return None
    try:
        rendered = render_module(reference_src, names, title="-")
    except (ValueError, KeyError):
        return None
    body = code.strip().splitlines()[2:]
    return names if body == rendered.strip().splitlines()[2:] else None


def _describe(transforms: list[str]) -> str:
    return " + ".join(transforms) if transforms else "plain eager"


def _title(choice: _Candidate) -> str:
    if choice.added:
        head = f"add {', '.join(choice.added)}"
        if choice.removed:
            head += f" (replacing {', '.join(choice.removed)})"
    elif choice.removed:
        head = f"drop {', '.join(choice.removed)}"
    else:
        head = "keep"
    return f"{head} -> {_describe(choice.transforms)}"


def _steps(choice: _Candidate, parent: list[str]) -> list[str]:
    steps = [f"start from the parent ({_describe(parent)})"]
    steps += [f"remove {t}" for t in choice.removed]
    steps += [f"add {t}: {CATALOGUE[t].step}" for t in choice.added]
    steps.append("keep the reference's parameter creation order (subclass Model) so weights match")
    return steps
