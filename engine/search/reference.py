"""Checks on a reference module before any search spends time or tokens on it.

The static check reads the file's AST (it never imports user code in this process);
the dynamic check runs the reference against itself in the benchmarker's sandbox.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from engine.bench.config import EvalConfig
from engine.bench.result import EvalResult


class ReferenceError_(ValueError):  # noqa: N801 - avoid shadowing the builtin ReferenceError
    """The reference is unusable; the message is one line for the user."""


def read_reference(path: Path) -> str:
    if not path.exists():
        raise ReferenceError_(f"reference {path} does not exist")
    if not path.is_file():
        raise ReferenceError_(f"reference {path} is not a file")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReferenceError_(f"cannot read reference {path}: {exc}") from None


def check_reference_source(source: str, name: str) -> None:
    """Raise unless the module parses and defines a top-level `Model` class and a
    `get_inputs` function (the KernelBench problem format)."""
    try:
        tree = ast.parse(source, filename=name)
    except SyntaxError as exc:
        raise ReferenceError_(
            f"reference {name}: syntax error at line {exc.lineno}: {exc.msg}"
        ) from None
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    assigned = {
        t.id
        for n in tree.body
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name)
    }
    missing = []
    if "Model" not in classes and "Model" not in assigned:
        missing.append("a top-level class Model")
    if "get_inputs" not in functions and "get_inputs" not in assigned:
        missing.append("a get_inputs() function")
    if missing:
        raise ReferenceError_(f"reference {name} lacks {' and '.join(missing)}")


def self_check_config(device: str, timeout_s: float | None) -> EvalConfig:
    """A cheap evaluation: one correctness trial, one timing trial."""
    extra: dict[str, Any] = {}
    if timeout_s is not None:
        extra = {"compile_timeout_s": timeout_s, "run_timeout_s": timeout_s}
    return EvalConfig(
        device=device,  # type: ignore[arg-type]
        correctness_trials=1,
        timing_trials=1,
        warmup_s=0.0,
        **extra,
    )


def self_check(benchmarker: Any, source: str, name: str, config: EvalConfig) -> EvalResult:
    """Run the reference as its own candidate; raise when it fails on its own inputs
    (import errors, exceptions, non-deterministic output)."""
    candidate = source.rstrip() + "\n\n\nModelNew = Model  # stark: reference self-check\n"
    result: EvalResult = benchmarker.evaluate(source, candidate, config)
    if result.stage == "harness":
        raise ReferenceError_(f"cannot check reference {name}: benchmarker failed: {result.error}")
    if not result.runnable:
        reason = (result.error or "incorrect output").strip().splitlines()[0]
        raise ReferenceError_(
            f"reference {name} fails on its own inputs ({result.stage or 'error'}): {reason}"
        )
    return result
