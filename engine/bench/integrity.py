"""Did the candidate patch what the verdict relies on? Snapshots, by identity, of torch's
and the reference's namespaces, of the harness's own modules and classes, and of the
worker's own objects, taken before the candidate loads and compared after it ran.

Replacing `compare_outputs` or shadowing `time_both` on the worker's `Evaluation` is the
cheapest way to fake a verdict from inside the worker; any rebinding fails the
evaluation with `harness_patched` (or `torch_patched` / `reference_tampered`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch

from engine.bench.output_checks import CheckFailure

HARNESS_MODULES = (
    "engine.atomic_io",
    *(
        f"engine.bench.{name}"
        for name in (
            "correctness",
            "integrity",
            "output_checks",
            "signed_files",
            "lease",
            "process_tree",
            "timing",
            "worker",
            "loader",
            "compile_cache",
            "profiling",
            "sandbox",
            "result",
            "config",
        )
    ),
)


def _namespaces(reference: ModuleType) -> dict[str, Any]:
    spaces: dict[str, Any] = {
        "torch": torch,
        "torch.nn.functional": torch.nn.functional,
        "torch.Tensor": torch.Tensor,
        "torch._C.TensorBase": torch._C.TensorBase,
        "torch.nn.Module": torch.nn.Module,
        "reference": reference,
    }
    model = getattr(reference, "Model", None)
    if isinstance(model, type):
        spaces["reference.Model"] = model
    # The harness's own modules and classes: replacing e.g. compare_outputs is the cheapest
    # way to fake a verdict from inside the worker.
    for module_name in HARNESS_MODULES:
        module = sys.modules.get(module_name)
        if module is None:
            continue
        spaces[module_name] = module
        for attr, value in vars(module).items():
            if isinstance(value, type) and value.__module__ == module_name:
                spaces[f"{module_name}.{attr}"] = value
    return spaces


_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep


def _torch_wrapper_of(new: Any, old: Any) -> bool:
    """True if `new` is torch's own wrapper around `old` (torch._dynamo wraps manual_seed and
    nn.Module.__init__ when a candidate uses torch.compile): code in torch's package that
    reaches `old` through `__wrapped__` or its closure."""
    current = new
    for _ in range(5):
        code = getattr(current, "__code__", None)
        if code is None or not code.co_filename.startswith(_TORCH_DIR):
            return False
        cells = [c.cell_contents for c in (current.__closure__ or ()) if _cell_filled(c)]
        if any(c is old for c in cells):
            return True
        current = getattr(current, "__wrapped__", None)
        if current is old:
            return True
    return False


def _cell_filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - empty cells raise
    except ValueError:
        return False
    return True


@dataclass
class NamespaceSnapshot:
    """Everything in torch's and the reference's namespaces, to spot a candidate's patching."""

    objects: dict[str, dict[str, Any]]

    @classmethod
    def take(cls, reference: ModuleType) -> NamespaceSnapshot:
        return cls({k: dict(vars(ns)) for k, ns in _namespaces(reference).items()})

    def changed(self, reference: ModuleType) -> list[str]:
        now = NamespaceSnapshot.take(reference).objects
        out: list[str] = []
        missing = object()
        for space, before in self.objects.items():
            after = now.get(space, {})
            for name, old in before.items():
                new = after.get(name, missing)
                if new is not old and not _torch_wrapper_of(new, old):
                    out.append(f"{space}.{name}")
        return out


_ABSENT = object()


def _attributes(owner: object) -> dict[str, Any]:
    """An object's own attributes (its __dict__, or its slots) plus its class."""
    own = getattr(owner, "__dict__", None)
    if own is not None:
        attrs = dict(own)
    else:
        slots = getattr(type(owner), "__slots__", ())
        attrs = {name: getattr(owner, name, _ABSENT) for name in slots}
    attrs["__class__"] = type(owner)
    return attrs


@dataclass
class InstanceSnapshot:
    """One harness object's attributes, by identity, taken before the candidate loads.

    The namespace snapshot covers modules and classes; a candidate that reaches the worker's
    `Evaluation` or `Timer` through frames or gc can instead shadow a method on the instance
    (`ev.time_both = fake`) or swap its clock, result or kernel clock for its own. None of
    these objects legitimately gains or rebinds an attribute once user code runs, so any
    difference is tampering. Comparing a dozen identities keeps the check cheap enough to run
    on every timing round."""

    owner: object
    label: str
    attrs: dict[str, Any]

    mutable: tuple[str, ...] = ()  # plain state the owner itself updates (a bool, a counter)

    @classmethod
    def take(cls, owner: object, label: str, mutable: tuple[str, ...] = ()) -> InstanceSnapshot:
        return cls(owner, label, _attributes(owner), mutable)

    def changed(self) -> list[str]:
        now = _attributes(self.owner)
        for name in self.mutable:
            now.pop(name, None)
        names = sorted((set(now) | set(self.attrs)) - set(self.mutable))
        return [
            f"{self.label}.{name}"
            for name in names
            if now.get(name, _ABSENT) is not self.attrs.get(name, _ABSENT)
        ]


class HarnessPatched(CheckFailure):
    """A harness object was modified while the candidate ran."""

    def __init__(self, changed: list[str]) -> None:
        shown = ", ".join(changed[:3]) + (
            f" (+{len(changed) - 3} more)" if len(changed) > 3 else ""
        )
        super().__init__(f"candidate patched the benchmark harness ({shown})", "harness_patched")


def integrity_failure(
    pristine: NamespaceSnapshot | None,
    reference: ModuleType | None,
    guards: list[InstanceSnapshot] | tuple[InstanceSnapshot, ...] = (),
    _changed: Any = NamespaceSnapshot.changed,  # bound before user code exists
    _instance_changed: Any = InstanceSnapshot.changed,
) -> tuple[str, str] | None:
    """(error, flag) if the candidate replaced anything in torch, the reference or the
    harness (its modules, classes, or the worker's own objects)."""
    patched = [name for guard in guards for name in _instance_changed(guard)]
    changed = patched + (
        _changed(pristine, reference) if pristine is not None and reference is not None else []
    )
    if not changed:
        return None
    shown = ", ".join(changed[:3]) + (f" (+{len(changed) - 3} more)" if len(changed) > 3 else "")
    if patched or any(name.startswith("engine.") for name in changed):
        return f"candidate patched the benchmark harness ({shown})", "harness_patched"
    return (
        f"candidate replaced {shown}; the reference's behaviour and timing can't be trusted",
        "torch_patched",
    )


def raise_if_patched(guard: InstanceSnapshot) -> None:
    """A module function, not a method: shadowing it on the instance changes nothing."""
    changed = guard.changed()
    if changed:
        raise HarnessPatched(changed)
