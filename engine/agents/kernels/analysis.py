"""Everything the kernel writer knows about one reference: its captured graph, the fusion
groups, and which groups each backend can generate (with the reason where it cannot).

Built once per (reference, device) and cached, since the capture runs the reference's
constructor in a child process. A reference that cannot be captured, or has no group any
backend of the device can write, gives a `CaptureFailure` whose reason the agent records
when it falls back to the wrapper transformations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.agents.kernels.capture import capture_reference
from engine.agents.kernels.cpp_codegen import generate_cpp, supports_cpp
from engine.agents.kernels.cuda_codegen import generate_cuda, supports_cuda
from engine.agents.kernels.fusion import fusion_groups
from engine.agents.kernels.ir import (
    Backend,
    CapturedGraph,
    CaptureFailure,
    FusionGroup,
    GeneratedGroup,
)
from engine.agents.kernels.triton_codegen import generate_triton, supports_triton

Generator = Callable[[CapturedGraph, FusionGroup, dict[str, Any]], GeneratedGroup]
Support = Callable[[CapturedGraph, FusionGroup], "str | None"]

GENERATORS: dict[str, Generator] = {
    "cpp": generate_cpp,
    "triton": generate_triton,
    "cuda": generate_cuda,
}
SUPPORT: dict[str, Support] = {
    "cpp": supports_cpp,
    "triton": supports_triton,
    "cuda": supports_cuda,
}
# Which backends write kernels for a device, the default first.
BACKENDS: dict[str, tuple[Backend, ...]] = {"cpu": ("cpp",), "cuda": ("triton", "cuda")}


@dataclass(frozen=True, slots=True)
class KernelAnalysis:
    graph: CapturedGraph
    groups: tuple[FusionGroup, ...]
    device: str
    # backend -> group id -> why that backend cannot generate it (absent: it can)
    unsupported: dict[str, dict[str, str]]

    @property
    def backends(self) -> tuple[Backend, ...]:
        return BACKENDS[self.device]

    def group(self, group_id: str) -> FusionGroup:
        for group in self.groups:
            if group.id == group_id:
                return group
        raise KeyError(f"no fusion group {group_id!r} for this reference")

    def usable(self, backend: str) -> list[FusionGroup]:
        blocked = self.unsupported.get(backend, {})
        return [g for g in self.groups if g.id not in blocked]

    def describe(self) -> str:
        """One line per group, for the plan's rationale and the docs."""
        lines = []
        for group in self.groups:
            why = {b: r for b, r in self.unsupported.items() if group.id in r}
            tail = "; ".join(f"no {b}: {r[group.id]}" for b, r in why.items())
            lines.append(
                f"{group.id} [{group.kind}] {group.summary}" + (f" ({tail})" if tail else "")
            )
        return "\n".join(lines)


_CACHE: dict[tuple[str, str], KernelAnalysis | CaptureFailure] = {}


def analyse_kernels(source: str, device: str) -> KernelAnalysis | CaptureFailure:
    """The analysis of `source` for `device` ("cpu" or "cuda"), cached per process."""
    device = "cuda" if device.startswith("cuda") else "cpu"
    key = (source, device)
    if key not in _CACHE:
        _CACHE[key] = _analyse(source, device)
    return _CACHE[key]


def _analyse(source: str, device: str) -> KernelAnalysis | CaptureFailure:
    graph = capture_reference(source, device)
    if isinstance(graph, CaptureFailure):
        return graph
    groups = tuple(fusion_groups(graph))
    if not groups:
        return CaptureFailure("the captured graph has no pointwise, reduction or epilogue group")
    unsupported: dict[str, dict[str, str]] = {}
    for backend in BACKENDS[device]:
        for group in groups:
            reason = SUPPORT[backend](graph, group)
            if reason is not None:
                unsupported.setdefault(backend, {})[group.id] = reason
    analysis = KernelAnalysis(graph, groups, device, unsupported)
    if not any(analysis.usable(b) for b in analysis.backends):
        reasons = "; ".join(sorted({r for by in unsupported.values() for r in by.values()}))
        return CaptureFailure(f"no fusion group can be generated for {device}: {reasons}")
    return analysis
