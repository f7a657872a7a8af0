"""`analyze_failure`: a short diagnosis of a failed node for the debug agent.

Shared by the search's debug step and the one-shot `stark debug`, so both tell the agent
the same thing about the same failure.
"""

from __future__ import annotations

from engine.search.node import StarkNode


def analyze_failure(node: StarkNode) -> str:
    """A short diagnosis for the debug agent: where it failed and what that usually means."""
    result = node.metrics
    if result is None:
        return (
            f"The previous step produced no benchmarkable kernel: {node.error}. "
            "Write a complete, correct ModelNew module in the required format."
        )
    stage = result.stage or ("correctness" if result.compiled else "compile")
    hints = {
        "compile": "The module failed to build or import: fix syntax, imports, or the "
        "extension source (the compiler output is in the log).",
        "import": "Importing the module failed: check imports and top-level code.",
        "runtime": "forward raised an exception: check shapes, dtypes, devices and indexing.",
        "correctness": "The output differs from the reference: check the maths, reductions, "
        "broadcasting, boundary handling and numerical precision.",
        "timeout": "The kernel took too long or hung: look for infinite loops, excessive "
        "compilation, or pathological sizes.",
        "crash": "The process died (segfault/abort/OOM): check out-of-bounds memory "
        "accesses and allocation sizes.",
        "reference": "The reference itself failed in the harness.",
    }
    lines = [f"Failure stage: {stage}.", f"Error: {result.error or node.error or 'unknown'}."]
    if result.error_location is not None:
        where = result.error_location
        lines.append(f"Location: line {where.line} of the kernel file ({where.function or '?'}).")
    if result.max_abs_err is not None:
        lines.append(f"Max abs error vs reference: {result.max_abs_err:.3g}.")
    if result.flags:
        lines.append(f"Benchmarker flags: {', '.join(result.flags)}.")
    lines.append(hints.get(stage, "Read the error output carefully."))
    return " ".join(lines)
