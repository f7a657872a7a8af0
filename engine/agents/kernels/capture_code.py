"""The statements torch.fx writes for a traced forward, one per node, and the imports they need.

Generated modules paste these lines into `ModelNew.forward` (a subclass of the reference's
Model, so `self.gemm` exists), which is why they are fx's own text rather than a rendering
of ours: fx knows how to spell every call it recorded. fx's `;  x = None` frees are left
out, and so are its renames of forward parameters (`input_1 = input`): generated forwards
take the parameters under their node names. The names fx's code reads besides torch,
operator and builtins (`inf`, `device`, ...) become import statements; a name no import
provides fails the capture rather than leaving code that cannot run. Used by the capture worker only (it reads a live GraphModule).
"""

from __future__ import annotations

import ast
import builtins
import importlib
import math
import types
from dataclasses import dataclass
from typing import Any

ALWAYS_THERE = frozenset({"torch", "operator", "builtins"})


class FxCodeError(Exception):
    """fx's code cannot be used as it stands; the message says why."""


@dataclass(frozen=True, slots=True)
class FxCode:
    lines: dict[str, str]  # node name -> "relu = torch.relu(x)"
    output: str  # "return (relu,)" or "return relu"
    imports: tuple[str, ...]  # "from math import inf", ...


def read_fx_code(graph_module: Any, reference_module: str) -> FxCode:
    python_code = graph_module.graph.python_code("self")
    src = python_code.src
    forward = next(s for s in ast.parse(src).body if isinstance(s, ast.FunctionDef))
    args = {a.arg for a in forward.args.args}
    defined = set(args)
    lines: dict[str, str] = {}
    output = ""
    used: set[str] = set()
    for stmt in forward.body:
        if isinstance(stmt, ast.Return):
            output = ast.get_source_segment(src, stmt) or ""
        elif not isinstance(stmt, ast.Assign) or _is_free(stmt, defined) or _renames(stmt, args):
            continue
        elif len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            name = stmt.targets[0].id
            lines[name] = ast.get_source_segment(src, stmt) or ""
            defined.add(name)
        else:
            raise FxCodeError(
                f"fx wrote a statement the capture does not read: {ast.unparse(stmt)}"
            )
        used |= {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name)}
    names = sorted(used & set(python_code.globals) - ALWAYS_THERE)
    imports = [
        _import_for(n, python_code.globals[n], reference_module)
        for n in names
        if getattr(builtins, n, None) is not python_code.globals[n]
    ]
    return FxCode(lines, output, tuple(imports))


def _renames(stmt: ast.Assign, args: set[str]) -> bool:
    """fx's `input_1 = input`, for a parameter whose name shadows a builtin: the captured
    graph calls the parameter by its node name (`input_1`) from the start."""
    return isinstance(stmt.value, ast.Name) and stmt.value.id in args


def _is_free(stmt: ast.Assign, defined: set[str]) -> bool:
    """fx's `x = None` / `a = b = None`, which drop references early."""
    return (
        isinstance(stmt.value, ast.Constant)
        and stmt.value.value is None
        and all(isinstance(t, ast.Name) and t.id in defined for t in stmt.targets)
    )


def _import_for(name: str, obj: Any, reference_module: str) -> str:
    if isinstance(obj, types.ModuleType):
        return f"import {obj.__name__}" + ("" if obj.__name__ == name else f" as {name}")
    if isinstance(obj, float) and (math.isinf(obj) or math.isnan(obj)) and name in ("inf", "nan"):
        return f"from math import {name}"
    if obj is type(None):
        return "from types import NoneType" + ("" if name == "NoneType" else f" as {name}")
    module_name = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", "")
    if module_name and module_name != reference_module and qualname.isidentifier():
        try:
            found = getattr(importlib.import_module(module_name), qualname, None)
        except ImportError:
            found = None
        if found is obj:
            alias = "" if name == qualname else f" as {name}"
            return f"from {module_name} import {qualname}{alias}"
    raise FxCodeError(f"fx's code needs {name!r} ({type(obj).__name__}), which no import provides")
