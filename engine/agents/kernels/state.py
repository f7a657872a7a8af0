"""What one generated kernel is: which fusion groups are fused, on which backend, with which
schedules, and what the lineage learned (groups handed back to torch, schedules that failed).

A `KernelState` is the kernel writer's counterpart of the wrapper agent's transformation
set: the module is a pure function of (reference, state), the state travels in the
`# stark-offline:` header as JSON, and `key()` identifies it, so the planner never proposes a
state that was already tried and a resumed run reads back exactly what a parent did.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from engine.agents.kernels.ir import Backend


@dataclass(frozen=True, slots=True)
class FailedSchedule:
    """A schedule value that broke a group (the debug step reverted it): never again."""

    group: str
    key: str
    value: Any
    failure: str  # failure class (engine.agents.failures.classify)

    def to_json(self) -> dict[str, Any]:
        return {"group": self.group, "key": self.key, "value": self.value, "failure": self.failure}


@dataclass(frozen=True, slots=True)
class KernelState:
    backend: Backend
    fused: tuple[str, ...] = ()  # group ids, sorted
    # Per fused group, the schedule keys that differ from the backend's defaults.
    schedules: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Groups the debug step handed back to torch ops in this lineage, with the reason.
    torch_only: dict[str, str] = field(default_factory=dict)
    failed_schedules: tuple[FailedSchedule, ...] = ()

    def key(self) -> str:
        """Identifies the generated code: backend, fused groups and their schedules."""
        chosen = {g: self.schedules.get(g, {}) for g in self.fused}
        return json.dumps([self.backend, list(self.fused), chosen], sort_keys=True)

    def schedule_of(self, group: str) -> dict[str, Any]:
        return dict(self.schedules.get(group, {}))

    def with_fused(self, fused: list[str] | tuple[str, ...]) -> KernelState:
        kept = {g: s for g, s in self.schedules.items() if g in fused}
        return KernelState(
            self.backend, tuple(sorted(fused)), kept, dict(self.torch_only), self.failed_schedules
        )

    def with_schedule(self, group: str, key: str, value: Any, default: Any) -> KernelState:
        schedules = {g: dict(s) for g, s in self.schedules.items()}
        entry = schedules.setdefault(group, {})
        if value == default:
            entry.pop(key, None)
        else:
            entry[key] = value
        if not entry:
            schedules.pop(group)
        return KernelState(
            self.backend, self.fused, schedules, dict(self.torch_only), self.failed_schedules
        )

    def with_backend(self, backend: Backend) -> KernelState:
        return KernelState(backend, self.fused, {}, dict(self.torch_only), self.failed_schedules)

    def handing_back(self, group: str, reason: str) -> KernelState:
        """`group` returned to torch ops for good (in this lineage), with why."""
        torch_only = {**self.torch_only, group: reason}
        return KernelState(
            self.backend,
            tuple(g for g in self.fused if g != group),
            {g: s for g, s in self.schedules.items() if g != group},
            torch_only,
            self.failed_schedules,
        )

    def recording(self, failed: FailedSchedule) -> KernelState:
        return KernelState(
            self.backend,
            self.fused,
            {g: dict(s) for g, s in self.schedules.items()},
            dict(self.torch_only),
            (*self.failed_schedules, failed),
        )

    def schedule_failed(self, group: str, key: str, value: Any) -> bool:
        return any(
            f.group == group and f.key == key and f.value == value for f in self.failed_schedules
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "fused": list(self.fused),
            "schedules": self.schedules,
            "torch_only": self.torch_only,
            "failed_schedules": [f.to_json() for f in self.failed_schedules],
        }

    @classmethod
    def from_json(cls, data: object) -> KernelState | None:
        """The state in a header, or None when it is absent or malformed (a foreign edit)."""
        if not isinstance(data, dict) or data.get("backend") not in ("cpp", "triton", "cuda"):
            return None
        try:
            fused = tuple(sorted(str(g) for g in data.get("fused", [])))
            schedules = {
                str(g): {str(k): v for k, v in s.items()}
                for g, s in dict(data.get("schedules", {})).items()
            }
            torch_only = {str(g): str(r) for g, r in dict(data.get("torch_only", {})).items()}
            failed = tuple(
                FailedSchedule(str(f["group"]), str(f["key"]), f["value"], str(f["failure"]))
                for f in data.get("failed_schedules", [])
            )
        except (TypeError, ValueError, KeyError, AttributeError):
            return None
        return cls(data["backend"], fused, schedules, torch_only, failed)
