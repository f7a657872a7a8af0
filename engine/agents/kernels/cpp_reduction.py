"""Reduction groups as C++: the prologue applied on load, the anchor's passes, the
reduced-shape epilogue, then the full-shape epilogue (`cpp_reduction_plan` says which
node is which; `cpp_reduction_values` holds the operands and evaluates nodes).

Two loop structures over the [outer, reduced, inner] layout:
- *along r* (inner == 1, or loop_order "reduced"): each parallel iteration owns one output
  position and sweeps its reduced elements, in vectors when inner == 1 and vector is
  "aten", else one element at a time (strided by inner); statistics are scalars;
- *along i* (inner > 1 with loop_order "inner"): each iteration owns a tile of adjacent
  inner positions (one `Vec`, or 64 lanes under "simd"/"scalar") and walks the reduced
  rows; statistics are per lane, so nothing is reduced across lanes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.agents.kernels.cpp_function import KernelFunction
from engine.agents.kernels.cpp_pointwise import emit_sweep
from engine.agents.kernels.cpp_reduction_inner import along_i
from engine.agents.kernels.cpp_reduction_plan import Derived, ReductionPlan, Stat
from engine.agents.kernels.cpp_reduction_values import CACHED, Load, ReductionWriter, offset, plus
from engine.agents.kernels.cpp_text import CodeWriter


def emit_reduction(fn: KernelFunction, plan: ReductionPlan, schedule: dict[str, Any]) -> list[str]:
    """Write the group's loops into `fn.body`; the lines describing them."""
    writer = ReductionWriter(fn, plan, schedule)
    writer.prepare()
    if writer.columns:
        along_i(writer)
    else:
        _along_r(writer)
    return writer.description()


# --- along r ---------------------------------------------------------------------------


def _along_r(rw: ReductionWriter) -> None:
    plan, w, schedule = rw.plan, rw.w, rw.schedule
    layout, vec = plan.layout, rw.vec
    strided = layout.inner > 1
    count = "kOuter * kInner" if strided else "kOuter"
    o, i = ("o", "i") if strided else ("row", "0")
    lit = rw.lit(False)
    grain = schedule["grain"]
    # a stat marked `cached` keeps its element per reduced position in a buffer of the
    # thread's chunk, which the epilogue reads instead of computing it again
    cache = not strided and rw.full_out and plan.program.cached_value is not None
    with w.block(
        f"at::parallel_for(0, {count}, stark::grain_for({count}, {grain}), "
        "[&](int64_t begin, int64_t end)",
        "});",
    ):
        if cache:
            w.line("std::vector<float> cache_buffer(kReduced);")
            w.line("float* const cache_row = cache_buffer.data();")
        _rows_r(rw, strided, o, i, lit, vec, bool(cache))


def _rows_r(
    rw: ReductionWriter, strided: bool, o: str, i: str, lit: Any, vec: bool, cache: bool
) -> None:
    plan, w, layout = rw.plan, rw.w, rw.plan.layout
    with w.block("for (int64_t row = begin; row < end; ++row)"):
        if strided:
            w.line("const int64_t o = row / kInner;")
            w.line("const int64_t i = row % kInner;")
        constants, rows = _row_bases(rw, o, i)

        def full_load(index: str, count: str | None, writer: CodeWriter) -> Load:
            def load(name: str) -> str:
                if name in constants:
                    return f"Vec({constants[name]})" if vec else constants[name]
                pointer, stride = rows[name]
                value = rw.ident(name)
                if vec:
                    tail = f", {count}" if count else ""
                    writer.line(f"const Vec {value} = Vec::loadu({pointer} + {index}{tail});")
                else:
                    at = index if stride == 1 else f"{index} * {stride}"
                    writer.line(f"const float {value} = {pointer}[{at}];")
                return value

            return load

        stats: dict[str, str] = {}
        for step in plan.program.steps:
            if isinstance(step, Derived):
                name = rw.stat_name(step.name)
                w.line(f"const float {name} = {step.value(stats, lit)};")
                stats[step.name] = name
            else:
                _pass_r(rw, step, stats, full_load, cache)
        reduced = _reduced_stage_r(rw, stats, o, i)
        if not rw.full_out:
            return
        outputs = {}
        for name, pointer in rw.full_out.items():
            outputs[name] = rw.ident(name, "row")
            base = offset([(o, layout.reduced * layout.inner), (i, 1)])
            w.line(f"float* {outputs[name]} = {plus(pointer, base)};")
        seen = {k: f"Vec({v})" for k, v in stats.items()} if vec else dict(stats)
        wrapped = {k: f"Vec({v})" for k, v in reduced.items()} if vec else dict(reduced)
        w.comment("the full-shape epilogue")

        def write(bw: CodeWriter, index: str, count: str | None, slot: str | None) -> None:
            known = dict(wrapped)
            here = seen
            if cache:
                here = {**seen, CACHED: "cached"}
                bw.line(
                    f"const {'Vec' if vec else 'float'} cached = {_cache_load(index, count, vec)};"
                )
            rw.emit_nodes(bw, rw.final_targets(), known, full_load(index, count, bw), vec, here)
            for name, row_pointer in outputs.items():
                if vec:
                    tail = f", {count}" if count else ""
                    bw.line(f"{known[name]}.store({row_pointer} + {index}{tail});")
                else:
                    at = f"{index} * kInner" if strided else index
                    bw.line(f"{row_pointer}[{at}] = {known[name]};")

        emit_sweep(w, "r", "0", "kReduced", write, rw.loops)


def _pass_r(
    rw: ReductionWriter,
    step: list[Stat],
    stats: dict[str, str],
    full_load: Callable[[str, str | None, CodeWriter], Load],
    cache: bool = False,
) -> None:
    """One sweep of the output's reduced elements accumulating `step`'s statistics (and
    storing a `cached` stat's elements in the row buffer when `cache`)."""
    w, schedule, vec, plan = rw.w, rw.schedule, rw.vec, rw.plan
    unroll = int(schedule["unroll"]) if vec else 1
    accs = [rw.stat_accumulator(s, "Vec" if vec else "float", unroll) for s in step]
    seen = {k: f"Vec({v})" for k, v in stats.items()} if vec else dict(stats)
    names = ", ".join(s.name for s in step)
    w.comment(f"{names} over the {plan.layout.reduced} reduced elements")
    for acc in accs:
        w.line(acc.declare())

    def accumulate(bw: CodeWriter, index: str, count: str | None, slot: str | None) -> None:
        known: dict[str, str] = {}
        load = full_load(index, count, bw)
        rw.emit_nodes(bw, rw.stat_targets(), known, load, vec, seen)
        x = known[plan.source] if plan.source in known else load(plan.source)
        for stat, acc in zip(step, accs, strict=True):
            element = stat.element(x, seen, rw.lit(vec))
            if cache and stat.cached:
                bw.line(f"const {'Vec' if vec else 'float'} element = {element};")
                bw.line(_cache_store("element", index, count, vec))
                element = "element"
            bw.line(acc.add(element, slot, count if vec else None))

    clauses = " ".join(a.omp_clause() for a in accs if a.omp_clause())
    simd_ok = all(a.simd_ok for a in accs)
    emit_sweep(w, "r", "0", "kReduced", accumulate, rw.loops, reduction=clauses, simd_ok=simd_ok)
    for stat, acc in zip(step, accs, strict=True):
        for line in acc.merge_copies():
            w.line(line)
        name = rw.stat_name(stat.name)
        w.line(f"const float {name} = {acc.total(horizontal=True)};")
        stats[stat.name] = name


def _cache_load(index: str, count: str | None, vec: bool) -> str:
    if not vec:
        return f"cache_row[{index}]"
    return f"Vec::loadu(cache_row + {index}{f', {count}' if count else ''})"


def _cache_store(value: str, index: str, count: str | None, vec: bool) -> str:
    if not vec:
        return f"cache_row[{index}] = {value};"
    return f"{value}.store(cache_row + {index}{f', {count}' if count else ''});"


def _row_bases(
    rw: ReductionWriter, o: str, i: str
) -> tuple[dict[str, str], dict[str, tuple[str, int]]]:
    """Per output position: constants (operands broadcast along r) and row pointers."""
    constants: dict[str, str] = {}
    rows: dict[str, tuple[str, int]] = {}
    for name in _full_operands(rw):
        pointer = rw.operands[name][0]
        so, sr, si = rw.strides(name, reduced=False)
        base = offset([(o, so), (i, si)])
        if sr == 0:
            constants[name] = rw.ident(name)
            rw.w.line(f"const float {constants[name]} = {pointer}[{base}];")
        else:
            rows[name] = (rw.ident(name, "row"), sr)
            rw.w.line(f"const float* {rows[name][0]} = {plus(pointer, base)};")
    return constants, rows


def _full_operands(rw: ReductionWriter) -> list[str]:
    """Operands read at full positions: by the anchor, free and full-shape nodes."""
    plan = rw.plan
    names = [plan.source] + [k for k in rw.operands if k.startswith("affine:")]
    for node in rw.order:
        if node.name in plan.free or node.name in plan.full:
            names += [a.node for a in node.args if a.node is not None]
    return [n for n in dict.fromkeys(names) if n in rw.operands]


def _reduced_stage_r(rw: ReductionWriter, stats: dict[str, str], o: str, i: str) -> dict[str, str]:
    """The anchor's value and the reduced-shape nodes at this output; stores its outputs."""
    plan, w = rw.plan, rw.w
    known: dict[str, str] = {}
    if plan.program.reduced_value is None:
        return known
    anchor = rw.namer.get(plan.anchor.name)
    w.line(f"const float {anchor} = {plan.program.reduced_value(stats, rw.lit(False))};")
    known[plan.anchor.name] = anchor

    def load(name: str) -> str:
        so, _, si = rw.strides(name, reduced=True)
        return f"{rw.operands[name][0]}[{offset([(o, so), (i, si)])}]"

    rw.emit_nodes(w, rw.reduced_targets() | set(rw.reduced_out), known, load, False, stats)
    for name, pointer in rw.reduced_out.items():
        w.line(f"{pointer}[row] = {known[name]};")
    return {k: v for k, v in known.items() if k in plan.reduced or k == plan.anchor.name}
