"""Prompt builders for the four agent roles plus the repair retry.

Templates are Markdown files beside this module with `$name` placeholders
(`string.Template`, so the braces of code and JSON need no escaping). Every prompt
states the target device, what the model may use there, and the one reply format
that `engine.search.parsing` accepts.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from importlib import resources
from string import Template
from typing import Any

from engine.agents.prompts.capabilities import capabilities_for, missing_for, restrictions_for
from engine.bench.result import ProfileEntry


@functools.cache
def _template(name: str) -> Template:
    return Template(resources.files(__package__).joinpath(f"{name}.md").read_text("utf-8"))


def render(name: str, **values: Any) -> str:
    """Fill a template; a missing placeholder is a programming error, so it raises."""
    return _template(name).substitute(**{k: str(v) for k, v in values.items()}).strip() + "\n"


# --- the target ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """The device the kernels are benchmarked on, as the prompts describe it."""

    device: str  # "cpu" | "cuda"
    name: str
    cores: int
    triton: bool

    def describe(self) -> str:
        """The target and, from `capabilities.CAPABILITIES`, what may be used on it (the
        same table the capability tests run through the benchmarker) and what may not."""
        installed = frozenset({"triton"} if self.triton else set())
        if self.device == "cuda":
            head = f"NVIDIA GPU ({self.name}), CUDA; inputs and parameters live on the GPU."
        else:
            head = (
                f"CPU only ({self.name}, {self.cores} cores), float32; there is NO GPU, so no "
                "CUDA or Triton."
            )
        lines = ["## Target", head, "", "## What you may use"]
        lines += [f"- {c.text};" for c in capabilities_for(self.device, installed)]
        lines += [
            f"- NOT available here: {c.key} ({c.needs} is not installed), do not use it;"
            for c in missing_for(self.device, installed)
        ]
        lines += ["", "## What the benchmarker checks"]
        lines += [f"- {r.text};" for r in restrictions_for(self.device)]
        return "\n".join(lines)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_name() -> str | None:
    """The first GPU's name via nvidia-smi (never by initialising CUDA in this process,
    which would break the benchmarker's fork server)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out else None


def resolve_device(device: str) -> str:
    """auto -> cuda when a GPU is visible, else cpu."""
    if device == "auto":
        return "cuda" if _gpu_name() else "cpu"
    return device


def detect_target(device: str) -> Target:
    resolved = resolve_device(device)
    triton = importlib.util.find_spec("triton") is not None
    if resolved == "cuda":
        return Target("cuda", _gpu_name() or "CUDA GPU", os.cpu_count() or 1, triton)
    return Target("cpu", _cpu_name(), len(os.sched_getaffinity(0)), triton)


# --- pieces -------------------------------------------------------------------------------


def format_profile(profile: list[ProfileEntry] | None, top: int = 10) -> str:
    if not profile:
        return "(no profile is available for this kernel)"
    rows = ["| operator / kernel | self time (ms) | calls | % |", "|---|---:|---:|---:|"]
    for entry in profile[:top]:
        rows.append(f"| {entry.name} | {entry.self_ms:.3f} | {entry.calls} | {entry.percent:.1f} |")
    return "\n".join(rows)


def tolerance_text(atol: float | None, rtol: float | None) -> str:
    if atol is None and rtol is None:
        return "1e-4 for float32 (1e-2 for fp16/bf16)"
    return f"{atol if atol is not None else 'default'} / {rtol if rtol is not None else 'default'}"


# --- builders -----------------------------------------------------------------------------


def build_seed_prompt(reference: str, target: Target, tolerance: str) -> str:
    return render(
        "seed",
        target=target.describe(),
        reference=reference.rstrip(),
        tolerance=tolerance,
        reply_format=render("code_format"),
    )


def build_plan_prompt(
    reference: str,
    target: Target,
    node_header: str,
    code: str,
    profile: str,
    history: str,
) -> str:
    return render(
        "plan",
        target=target.describe(),
        reference=reference.rstrip(),
        node_header=node_header,
        code=code.rstrip(),
        profile=profile,
        history=history,
    )


def build_code_prompt(
    reference: str,
    target: Target,
    node_header: str,
    anchored_code: str,
    plan_json: str,
    history: str,
) -> str:
    return render(
        "code",
        target=target.describe(),
        reference=reference.rstrip(),
        node_header=node_header,
        anchored_code=anchored_code.rstrip(),
        plan=plan_json,
        history=history,
        reply_format=render("code_format"),
    )


def build_debug_prompt(
    reference: str,
    target: Target,
    node_header: str,
    code: str,
    error_log: str,
    analysis: str,
    plan_hint: str,
    history: str,
) -> str:
    return render(
        "debug",
        target=target.describe(),
        reference=reference.rstrip(),
        node_header=node_header,
        code=code.rstrip() or "# (no code: the previous attempt produced none)",
        error_log=error_log.rstrip(),
        analysis=analysis,
        plan_hint=plan_hint,
        history=history,
        reply_format=render("code_format"),
    )


def build_repair_prompt(
    original_prompt: str, previous_reply: str, parse_error: str, *, plan: bool
) -> str:
    return render(
        "repair",
        parse_error=parse_error,
        original_prompt=original_prompt.rstrip(),
        previous_reply=previous_reply.rstrip() or "(empty reply)",
        reply_format=render("plan_format" if plan else "code_format"),
    )
