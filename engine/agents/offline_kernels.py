"""The offline agent's kernel-writing roles: plan, code and debug over a `KernelState`.

`engine.agents.offline.OfflineAgent` hands a request here when the reference could be
captured (`engine.agents.kernels.analysis`); otherwise it keeps its wrapper transformations
and records why. The plan is a JSON object naming the fusion groups and the schedule
(`kernel`, `groups`, `move`), followed by the parent's code with the part that changes
anchored; the code step renders the planned state into a `ModelNew` module with generated
C++ / Triton / CUDA; the debug step edits the state for the failure it reads
(`engine.agents.kernels.debug`).
"""

from __future__ import annotations

import json
import random
from typing import Any

from engine.agents.base import AgentRequest
from engine.agents.kernels.analysis import GENERATORS, KernelAnalysis
from engine.agents.kernels.debug import debug_kernel
from engine.agents.kernels.module import render_kernel_module
from engine.agents.kernels.planner import (
    COMPILE_TRANSFORM,
    KernelMove,
    choose_kernel_move,
    parent_state,
)
from engine.agents.kernels.schedule import resolve
from engine.agents.kernels.state import KernelState
from engine.agents.transforms import (
    ANCHOR_BEGIN,
    ANCHOR_END,
    anchor,
    header_transforms,
    read_header,
)


def plan_reply(request: AgentRequest, analysis: KernelAnalysis, rng: random.Random) -> str:
    parent = parent_state(request.parent_code, analysis)
    parent_transforms = header_transforms(request.parent_code) or []
    move = choose_kernel_move(
        analysis,
        parent,
        request.history,
        request.profile,
        rng,
        parent_is_compile=COMPILE_TRANSFORM in parent_transforms,
    )
    plan = plan_json(analysis, parent, move)
    parent_code = request.parent_code or render_state(
        request.reference_src, analysis, parent, title="parent", meta={}
    )
    return (
        f"Plan: {plan['title']}\n\n"
        f"```json\n{json.dumps(plan, indent=2)}\n```\n\n"
        f"```python\n{anchor_move(parent_code, analysis, move).rstrip()}\n```\n"
    )


def plan_json(analysis: KernelAnalysis, parent: KernelState, move: KernelMove) -> dict[str, Any]:
    state = move.state
    groups = []
    for group in analysis.groups:
        entry: dict[str, Any] = {
            "id": group.id,
            "kind": group.kind,
            "ops": group.summary,
            "fused": group.id in state.fused,
        }
        if group.id in state.fused:
            entry["schedule"] = resolve(state.backend, group.kind, state.schedule_of(group.id))
        if group.id in state.torch_only:
            entry["torch_only"] = state.torch_only[group.id]
        blocked = analysis.unsupported.get(state.backend, {}).get(group.id)
        if blocked:
            entry["unsupported"] = blocked
        groups.append(entry)
    steps = [f"start from the parent ({describe(parent)})", move.title]
    if move.kind != "compile":
        steps.append(f"result: {describe(state)}; everything unfused stays torch ops")
    return {
        "title": move.title,
        "steps": steps,
        "transformations": move.transformations,
        "kernel": state.to_json(),
        "move": move.to_json(),
        "groups": groups,
        "rationale": "; ".join(move.reasons) or "untried state",
    }


def code_reply(request: AgentRequest, analysis: KernelAnalysis) -> str | None:
    """The module for the request's kernel plan; None when the plan carries no kernel state
    (a plan from an LLM, or the torch.compile move: the wrapper renderer handles those)."""
    plan = request.plan or {}
    if plan.get("transformations"):
        return None
    state = KernelState.from_json(plan.get("kernel"))
    if state is None or state.backend not in analysis.backends:
        return None
    move = plan.get("move") if isinstance(plan.get("move"), dict) else {}
    title = str(plan.get("title") or describe(state))
    code = render_state(
        request.reference_src,
        analysis,
        state,
        title=f"Plan: {title}",
        meta={"role": "code", "move": move},
    )
    return f"Implements the plan: {title}.\n\n```python\n{code.rstrip()}\n```\n"


def debug_reply(request: AgentRequest, analysis: KernelAnalysis) -> tuple[str | None, str]:
    """(module, reason) for a failing kernel the writer rendered; (None, reason) when it
    cannot fix it. The caller checks the module is its own first (`is_own_kernel`)."""
    code = request.parent_code or ""
    meta = read_header(code) or {}
    state = KernelState.from_json(meta.get("kernel"))
    if state is None:
        return None, "the failing kernel carries no kernel-writer state"
    move = meta.get("move") if isinstance(meta.get("move"), dict) else None
    fix = debug_kernel(analysis, state, code, request.error_log or "", move)
    if fix.state is None:
        return None, fix.reason
    fixed = render_state(
        request.reference_src,
        analysis,
        fix.state,
        title=f"Debug: {fix.reason}",
        meta={"role": "debug", "move": {"kind": "debug", "failure": fix.failure}},
    )
    return f"Fix: {fix.reason}.\n\n```python\n{fixed.rstrip()}\n```\n", fix.reason


def render_state(
    reference_src: str,
    analysis: KernelAnalysis,
    state: KernelState,
    *,
    title: str,
    meta: dict[str, Any],
) -> str:
    """The `ModelNew` module of `state`: a pure function of (reference, state, title, meta)."""
    generated = []
    groups = []
    for group_id in state.fused:
        group = analysis.group(group_id)
        schedule = resolve(state.backend, group.kind, state.schedule_of(group_id))
        generated.append(GENERATORS[state.backend](analysis.graph, group, schedule))
        groups.append(group)
    return render_kernel_module(
        reference_src,
        analysis.graph,
        generated,
        groups,
        title=" ".join(title.split()),
        meta={"transforms": [], "kernel": state.to_json(), **meta},
    )


def is_own_kernel(code: str, reference_src: str, analysis: KernelAnalysis) -> bool:
    """Whether `code` is exactly what the writer renders for its header's state (an edited
    or foreign kernel is not, and goes to the targeted foreign-kernel fixes instead)."""
    meta = read_header(code)
    state = KernelState.from_json((meta or {}).get("kernel"))
    if meta is None or state is None or state.backend not in analysis.backends:
        return False
    try:
        rendered = render_state(
            reference_src,
            analysis,
            state,
            title="-",
            meta={k: v for k, v in meta.items() if k not in ("transforms", "kernel")},
        )
    except (KeyError, ValueError):
        return False
    return code.strip().splitlines()[2:] == rendered.strip().splitlines()[2:]


def describe(state: KernelState) -> str:
    if not state.fused:
        return "no group fused: the reference's ops"
    return f"{', '.join(state.fused)} fused as {state.backend}"


def anchor_move(code: str, analysis: KernelAnalysis, move: KernelMove) -> str:
    """The parent's code with the part the move changes between the anchors: the group's
    kernel section and forward line when it has one, else ModelNew's methods."""
    group = move.group
    if group is None:
        return anchor(code)
    lines = code.splitlines()
    marked: list[int] = []
    inside = False
    for index, text in enumerate(lines):
        if f"// --- group {group}:" in text:
            inside = True
        if inside or text.strip().startswith(f"# {group}:"):
            marked.append(index)
        if f"// --- end {group} ---" in text:
            inside = False
    if not marked:  # the group is not in the parent yet: its ops live in forward()
        names = set(analysis.group(group).nodes)
        marked = [i for i, t in enumerate(lines) if t.strip().split(" = ")[0] in names]
    if not marked:
        return anchor(code)
    chosen = set(marked)
    out: list[str] = []
    for index, text in enumerate(lines):  # one anchored span per run of marked lines
        indent = text[: len(text) - len(text.lstrip())]
        if index in chosen and index - 1 not in chosen:
            out.append(indent + ANCHOR_BEGIN)
        out.append(text)
        if index in chosen and index + 1 not in chosen:
            out.append(indent + ANCHOR_END)
    return "\n".join(out) + "\n"
