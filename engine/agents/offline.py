"""The embedded default agent: plays every role deterministically with no network.

It applies real, semantics-preserving transformations of the reference (see
`engine.agents.transforms` for the catalogue) and answers in exactly the format an LLM is
asked for, so the same parser, tree and benchmarker run in both modes.

Policy, in short:
- SEED: the reference run eagerly (speedup ~1x), so the score curve starts honestly.
- PLAN (`engine.agents.offline_plan`): score the one-step moves from the parent's set
  (add, swap a compile mode, drop a failing one) by prior value for this reference and
  device, plus evidence from the history (escalate what sped up, avoid what failed, never
  repeat a tried set), plus seeded noise. A set that already failed for a permanent reason
  (in the history, or recorded in the parent's header by an earlier debug step) is never
  proposed again. Nothing is staged: a buggy node appears only when a proposed kernel
  really fails.
- CODE: render the plan's transformations into a `ModelNew` module.
- DEBUG: for its own kernel, read the error log and the header, revert the offending
  transformation, record the failure in the header, and re-render. For a kernel it did not
  write, make a targeted edit (`engine.agents.kernel_fixes`) or refuse with the reason; it
  never passes the reference off as a fix.
- REPAIR: re-emit a well-formed reply.

Kernel writing (`engine.agents.offline_kernels`, on by default): when the reference can be
captured as a graph (`engine.agents.kernels.analysis`), PLAN/CODE/DEBUG work on a
`KernelState` instead: which fusion groups are generated as C++ (CPU) or Triton/CUDA (GPU)
kernels and with which schedules; torch.compile stays one move among them. A reference that
cannot be captured keeps the wrapper transformations above, and every plan says why.
`STARK_OFFLINE_KERNELS=0` (or `OfflineAgent(kernels=False)`) turns kernel writing off, for
quick demos and for tests of the wrapper policy.

Replies are `kind="agent"`, with no token counts and zero cost: nothing was spent.

Every random choice comes from an RNG keyed by (seed, round, role, parent), never from
process state, so a resumed run makes the same choices.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from dataclasses import dataclass
from typing import Any

from engine.agents.base import (
    AgentError,
    AgentReply,
    AgentRequest,
    ReplyKind,
    Role,
    repaired_role,
)
from engine.agents.failures import (
    FailureRecord,
    classify,
    first_line,
    merge,
    records_from_meta,
)
from engine.agents.kernel_fixes import fix_foreign_kernel
from engine.agents.kernels.ir import CaptureFailure
from engine.agents.offline_plan import Candidate, choose_move
from engine.agents.render import render_module
from engine.agents.transforms import (
    CATALOGUE,
    ReferenceFeatures,
    analyse_reference,
    anchor,
    header_transforms,
    names_in_text,
    normalise,
    read_header,
)
from engine.agents.wrapper_diagnosis import diagnose

MODEL_NAME = "stark-offline"
KERNELS_ENV = "STARK_OFFLINE_KERNELS"


@dataclass(slots=True)
class _Answer:
    """A role's reply text, or a refusal (no code) with its reason."""

    text: str
    refusal: str | None = None


class OfflineAgent:
    """Deterministic stand-in for an LLM; see the module docstring for its policy."""

    name = "offline"
    reply_kind: ReplyKind = "agent"

    def __init__(self, seed: int = 0, kernels: bool | None = None) -> None:
        self.seed = int(seed)
        if kernels is None:
            kernels = os.environ.get(KERNELS_ENV, "1").strip().lower() not in ("0", "false", "no")
        self.kernels = kernels

    def kernel_analysis(self, request: AgentRequest, device: str) -> Any:
        """The reference's `KernelAnalysis` (graph and fusion groups), or the
        `CaptureFailure` saying why the agent writes no kernels. Imported here: the kernel
        writer's code generators are only loaded when kernel writing is on."""
        if not self.kernels:
            return CaptureFailure(f"kernel writing is off ({KERNELS_ENV}=0)")
        from engine.agents.kernels.analysis import analyse_kernels

        return analyse_kernels(request.reference_src, device)

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
        analysis = self.kernel_analysis(request, device)
        if not isinstance(analysis, CaptureFailure):
            from engine.agents import offline_kernels

            parent_key = (read_header(request.parent_code) or {}).get("kernel")
            rng = self.rng_for(request, [json.dumps(parent_key, sort_keys=True)])
            return _Answer(offline_kernels.plan_reply(request, analysis, rng))
        parent = self._parent_transforms(request, features, device)
        choice = self._choose(request, features, device, parent)
        plan = {
            "title": _title(choice),
            "steps": _steps(choice, parent),
            "transformations": choice.transforms,
            "rationale": "; ".join(choice.reasons) or "untried combination",
            "kernel_writer": f"not used: {analysis.reason}",
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
        analysis = self.kernel_analysis(request, device)
        if not isinstance(analysis, CaptureFailure):
            from engine.agents import offline_kernels

            reply = offline_kernels.code_reply(request, analysis)
            if reply is not None:
                return _Answer(reply)
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
        analysis = self.kernel_analysis(request, device)
        if not isinstance(analysis, CaptureFailure):
            from engine.agents import offline_kernels

            if offline_kernels.is_own_kernel(code, request.reference_src, analysis):
                reply, reason = offline_kernels.debug_reply(request, analysis)
                return _Answer(reply) if reply is not None else _refusal(reason)
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
    ) -> Candidate:
        return choose_move(request, features, device, parent, self.rng_for(request, parent))


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


def _title(choice: Candidate) -> str:
    if choice.added:
        head = f"add {', '.join(choice.added)}"
        if choice.removed:
            head += f" (replacing {', '.join(choice.removed)})"
    elif choice.removed:
        head = f"drop {', '.join(choice.removed)}"
    else:
        head = "keep"
    return f"{head} -> {_describe(choice.transforms)}"


def _steps(choice: Candidate, parent: list[str]) -> list[str]:
    steps = [f"start from the parent ({_describe(parent)})"]
    steps += [f"remove {t}" for t in choice.removed]
    steps += [f"add {t}: {CATALOGUE[t].step}" for t in choice.added]
    steps.append("keep the reference's parameter creation order (subclass Model) so weights match")
    return steps
