"""Which wrapper transformation to revert for a failure: the offline agent's debug step for
its own wrapper kernels (precision, channels_last, CUDA graphs, compile modes), read from
the failure log. Kernels it generated are debugged by `engine.agents.kernels.debug`."""

from __future__ import annotations

import re

from engine.agents.transforms import CATALOGUE, COMPILE_MODES

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
