"""The fused elementwise pass: one loop over the domain computing a chain of pointwise nodes.

Pointwise groups are this pass alone; epilogue groups run it in place on the anchor's
output; reductions reuse `emit_sweep` and `emit_values` for their passes over a row.

Vectorisation follows the schedule's `vector`: "aten" writes `stark::Vec` loops with a
masked tail (`Vec::loadu(p, n)` / `store(p, n)`), `unroll` vectors per iteration; "simd"
writes the scalar loop under `#pragma omp simd` (`simdlen` = unroll vectors); "scalar"
neither (`#pragma GCC unroll` only). Threads come from at::parallel_for, ATen's own pool.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.agents.kernels.cpp_layout import RunLayout, numel, run_layout
from engine.agents.kernels.cpp_ops import op_expression, scalar_operand
from engine.agents.kernels.cpp_text import CodeWriter, Namer
from engine.agents.kernels.ir import GraphNode

# body(writer, index, tail lane count or None for a full vector, unrolled copy or None)
Body = Callable[[CodeWriter, str, str | None, str | None], None]


@dataclass(frozen=True, slots=True)
class Operand:
    """A tensor the pass reads: a graph value from outside the fused nodes."""

    name: str  # graph node name
    shape: tuple[int, ...]
    pointer: str  # the C++ `const float*` holding its contiguous data


def needed_nodes(nodes: list[GraphNode], targets: set[str]) -> list[GraphNode]:
    """The nodes (topological order kept) that `targets` depend on, themselves included."""
    wanted = set(targets)
    kept: list[GraphNode] = []
    for node in reversed(nodes):
        if node.name in wanted:
            kept.append(node)
            wanted.update(a.node for a in node.args if a.node is not None)
    return list(reversed(kept))


def emit_values(
    w: CodeWriter, namer: Namer, nodes: list[GraphNode], known: dict[str, str], vec: bool
) -> None:
    """`const Vec name = ...;` (or float) for each node; `known` maps the values already
    available to their C++ expressions and gains the new ones."""
    kind = "Vec" if vec else "float"
    for node in nodes:
        operands = [
            known[a.node] if a.node is not None else scalar_operand(a.value, vec) for a in node.args
        ]
        name = namer.get(node.name)
        w.line(f"const {kind} {name} = {op_expression(node, operands, vec)};")
        known[node.name] = name


def emit_sweep(
    w: CodeWriter,
    index: str,
    start: str,
    stop: str,
    body: Body,
    schedule: dict[str, Any],
    *,
    reduction: str = "",
    simd_ok: bool = True,
) -> None:
    """A loop of `index` over [start, stop) calling `body` per vector (or element), in a
    scope of its own. `body` gets the position, the tail's lane count (None for a full
    vector) and the unrolled copy it runs in ("u", "0", or None when not unrolled)."""
    unroll = int(schedule["unroll"])
    if schedule["vector"] != "aten":
        scalar_loop_pragmas(w, schedule, reduction=reduction, simd_ok=simd_ok)
        with w.block(f"for (int64_t {index} = {start}; {index} < {stop}; ++{index})"):
            body(w, index, None, None)
        return
    with w.block(""):
        w.line(f"int64_t {index} = {start};")
        if unroll > 1:
            step = f"{unroll} * Vec::size()"
            with w.block(f"for (; {index} + {step} <= {stop}; {index} += {step})"):
                w.pragma(f"GCC unroll {unroll}")
                with w.block(f"for (int u = 0; u < {unroll}; ++u)"):
                    w.line(f"const int64_t k = {index} + u * Vec::size();")
                    body(w, "k", None, "u")
            with w.block(f"for (; {index} < {stop}; {index} += Vec::size())"):
                w.line(f"const int64_t n = std::min<int64_t>(Vec::size(), {stop} - {index});")
                body(w, index, "n", "0")
            return
        with w.block(f"for (; {index} + Vec::size() <= {stop}; {index} += Vec::size())"):
            body(w, index, None, None)
        with w.block(f"if ({index} < {stop})"):
            w.line(f"const int64_t n = {stop} - {index};")
            body(w, index, "n", None)


def scalar_loop_pragmas(
    w: CodeWriter, schedule: dict[str, Any], *, reduction: str = "", simd_ok: bool = True
) -> None:
    """The pragmas of a scalar loop: `omp simd` (with its `reduction` clause) for "simd",
    GCC's unroll otherwise (GCC takes one of the two per loop). `simd_ok` is False for a
    loop that carries a dependency `omp simd` cannot express (a Kahan accumulator)."""
    unroll = int(schedule["unroll"])
    if schedule["vector"] == "simd" and simd_ok:
        clauses = [f"simdlen({unroll} * Vec::size())"] if unroll > 1 else []
        if reduction:
            clauses.append(reduction)
        w.pragma(" ".join(["omp simd", *clauses]))
    elif unroll > 1:
        w.pragma(f"GCC unroll {unroll}")


def load(pointer: str, index: str, count: str | None, vec: bool) -> str:
    """The value at `pointer[index]`: a (masked) vector load or one float."""
    if not vec:
        return f"{pointer}[{index}]"
    if count is None:
        return f"Vec::loadu({pointer} + {index})"
    return f"Vec::loadu({pointer} + {index}, {count})"


def store(value: str, pointer: str, index: str, count: str | None, vec: bool) -> str:
    if not vec:
        return f"{pointer}[{index}] = {value};"
    tail = f", {count}" if count is not None else ""
    return f"{value}.store({pointer} + {index}{tail});"


def emit_elementwise(
    w: CodeWriter,
    namer: Namer,
    *,
    domain: tuple[int, ...],
    nodes: list[GraphNode],
    operands: list[Operand],
    stores: dict[str, str],
    schedule: dict[str, Any],
) -> None:
    """One parallel pass over `domain` computing `nodes` and writing `stores` (node name
    -> `float*` of a contiguous buffer of the domain's shape)."""
    computed = needed_nodes(nodes, set(stores))
    read = {a.node for n in computed for a in n.args if a.node is not None}
    operands = [op for op in operands if op.name in read]
    layout = run_layout(domain, {op.name: op.shape for op in operands})
    vec = schedule["vector"] == "aten"
    grain = int(schedule["grain"])
    for op in operands:  # one value for the whole pass (a one-element tensor)
        if layout.constant_everywhere(op.name):
            w.line(f"const float {namer.get(op.name)} = {op.pointer}[0];")

    def body(pointers: dict[str, str], outputs: dict[str, str]) -> Body:
        def emit(bw: CodeWriter, index: str, count: str | None, slot: str | None) -> None:
            known: dict[str, str] = {}
            for op in operands:
                name = namer.get(op.name)
                if layout.run_strides[op.name] == 1:
                    kind = "Vec" if vec else "float"
                    bw.line(f"const {kind} {name} = {load(pointers[op.name], index, count, vec)};")
                    known[op.name] = name
                else:
                    known[op.name] = f"Vec({name})" if vec else name
            emit_values(bw, namer, computed, known, vec)
            for value, pointer in outputs.items():
                bw.line(store(known[value], pointer, index, count, vec))

        return emit

    if layout.flat:
        w.line(f"constexpr int64_t kNumel = {numel(domain)};")
        with w.block(
            f"at::parallel_for(0, kNumel, {grain}, [&](int64_t begin, int64_t end)", "});"
        ):
            pointers = {op.name: op.pointer for op in operands}
            emit_sweep(w, "j", "begin", "end", body(pointers, stores), schedule)
        return
    w.line(f"constexpr int64_t kRuns = {layout.runs};  // prefix {list(layout.prefix)}")
    w.line(f"constexpr int64_t kRun = {layout.run};  // contiguous elements per run")
    runs = f"at::parallel_for(0, kRuns * kRun, {grain}, [&](int64_t begin, int64_t end)"
    with (
        w.block(runs, "});"),
        w.block("for (int64_t run = begin / kRun; run * kRun < end; ++run)"),
    ):
        w.line("const int64_t start = std::max<int64_t>(begin - run * kRun, 0);")
        w.line("const int64_t stop = std::min<int64_t>(end - run * kRun, kRun);")
        pointers, outputs = _run_pointers(w, namer, layout, operands, stores)
        emit_sweep(w, "j", "start", "stop", body(pointers, outputs), schedule)


def _run_pointers(
    w: CodeWriter,
    namer: Namer,
    layout: RunLayout,
    operands: list[Operand],
    stores: dict[str, str],
) -> tuple[dict[str, str], dict[str, str]]:
    """Declare each operand's pointer (or constant value) for the current run."""
    dense = _dense_strides(layout)
    offsets = {
        op.name: _offset(layout.prefix_strides[op.name], dense)
        for op in operands
        if not layout.constant_everywhere(op.name)
    }
    if any(o != "run * kRun" and o != "0" for o in offsets.values()):
        _emit_prefix_indices(w, layout.prefix)
    pointers: dict[str, str] = {}
    for op in operands:
        if op.name not in offsets:
            continue
        if layout.run_strides[op.name] == 1:
            pointer = namer.get(op.name, "run")
            at = offsets[op.name]
            w.line(f"const float* {pointer} = {op.pointer}" + (f" + {at};" if at != "0" else ";"))
            pointers[op.name] = pointer
        else:
            w.line(f"const float {namer.get(op.name)} = {op.pointer}[{offsets[op.name]}];")
    outputs: dict[str, str] = {}
    for value, pointer in stores.items():
        run_pointer = namer.get(value, "run")
        w.line(f"float* {run_pointer} = {pointer} + run * kRun;")
        outputs[value] = run_pointer
    return pointers, outputs


def _dense_strides(layout: RunLayout) -> tuple[int, ...]:
    strides = []
    step = layout.run
    for size in reversed(layout.prefix):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def _offset(strides: tuple[int, ...], dense: tuple[int, ...]) -> str:
    if strides == dense:
        return "run * kRun"
    terms = [f"i{d}" if s == 1 else f"i{d} * {s}" for d, s in enumerate(strides) if s]
    return " + ".join(terms) or "0"


def _emit_prefix_indices(w: CodeWriter, prefix: tuple[int, ...]) -> None:
    w.comment(f"this run's index in each prefix dim {list(prefix)}")
    for d in range(len(prefix)):
        below = numel(prefix[d + 1 :])
        index = f"run / {below}" if below > 1 else "run"
        if d > 0:
            index = f"({index}) % {prefix[d]}" if below > 1 else f"run % {prefix[d]}"
        w.line(f"const int64_t i{d} = {index};")
