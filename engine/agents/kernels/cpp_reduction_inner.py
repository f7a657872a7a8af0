"""Reduction groups along i: each parallel iteration owns a tile of adjacent inner
positions (one `Vec`, or 64 lanes under "simd"/"scalar") and walks the reduced rows;
statistics are per lane, so nothing is reduced across lanes (`cpp_reduction` has the
overview and the along-r loops)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from engine.agents.kernels.cpp_pointwise import scalar_loop_pragmas
from engine.agents.kernels.cpp_reduction_plan import Derived, Stat
from engine.agents.kernels.cpp_reduction_values import Load, ReductionWriter, offset
from engine.agents.kernels.cpp_text import CodeWriter

SCALAR_TILE = 64
RowBody = Callable[[CodeWriter, str, "str | None"], None]  # (writer, row, unrolled copy)


def along_i(rw: ReductionWriter) -> None:
    plan, w, schedule = rw.plan, rw.w, rw.schedule
    layout, vec = plan.layout, rw.vec
    lanes = "Vec" if vec else "float"
    w.line("constexpr int64_t kTile = " + ("Vec::size();" if vec else f"{SCALAR_TILE};"))
    w.line("constexpr int64_t kTiles = (kInner + kTile - 1) / kTile;")
    grain = schedule["grain"]
    with (
        w.block(
            "at::parallel_for(0, kOuter * kTiles, "
            f"stark::grain_for(kOuter * kTiles, {grain}), [&](int64_t begin, int64_t end)",
            "});",
        ),
        w.block("for (int64_t tile = begin; tile < end; ++tile)"),
    ):
        w.line("const int64_t o = tile / kTiles;")
        w.line("const int64_t i = tile % kTiles * kTile;  // the tile's first inner position")
        w.line("const int64_t n = std::min<int64_t>(kTile, kInner - i);  // its lanes")

        def full_load(row: str, writer: CodeWriter) -> Load:
            def load(name: str) -> str:
                pointer = rw.operands[name][0]
                so, sr, si = rw.strides(name, reduced=False)
                base = offset([("o", so), (row, sr)])
                value = rw.ident(name)
                if vec:
                    read = (
                        f"Vec::loadu({pointer} + {base} + i, n)"
                        if si
                        else f"Vec({pointer}[{base}])"
                    )
                else:
                    read = f"{pointer}[{base} + i + k]" if si else f"{pointer}[{base}]"
                writer.line(f"const {lanes} {value} = {read};")
                return value

            return load

        stats: dict[str, str] = {}
        for step in plan.program.steps:
            if isinstance(step, Derived):
                name = rw.stat_name(step.name)
                if vec:
                    w.line(f"const Vec {name} = {step.value(stats, rw.lit(True))};")
                    stats[step.name] = name
                else:
                    w.line(f"float {name}[kTile];")
                    with lane_loop(w, schedule):
                        w.line(f"{name}[k] = {step.value(stats, rw.lit(False))};")
                    stats[step.name] = f"{name}[k]"
            else:
                _pass_i(rw, step, stats, full_load)
        reduced = _reduced_stage_i(rw, stats)
        if not rw.full_out:
            return
        w.comment("the full-shape epilogue")

        def write(bw: CodeWriter, row: str, slot: str | None) -> None:
            known = dict(reduced)
            rw.emit_nodes(bw, rw.final_targets(), known, full_load(row, bw), vec, stats)
            base = offset([("o", layout.reduced * layout.inner), (row, layout.inner)])
            for name, pointer in rw.full_out.items():
                if vec:
                    bw.line(f"{known[name]}.store({pointer} + {base} + i, n);")
                else:
                    bw.line(f"{pointer}[{base} + i + k] = {known[name]};")

        _rows_loop(w, schedule, write, vec, int(schedule["unroll"]) if vec else 1)


def _pass_i(
    rw: ReductionWriter,
    step: list[Stat],
    stats: dict[str, str],
    full_load: Callable[[str, CodeWriter], Load],
) -> None:
    """One walk down the reduced rows accumulating `step`'s statistics per lane."""
    w, schedule, vec, plan = rw.w, rw.schedule, rw.vec, rw.plan
    lanes = "Vec" if vec else "float"
    unroll = int(schedule["unroll"]) if vec else 1
    accs = [rw.stat_accumulator(s, lanes, unroll) for s in step]
    names = ", ".join(s.name for s in step)
    w.comment(f"{names} down the {plan.layout.reduced} reduced rows")
    for acc in accs:
        w.line(acc.declare(None if vec else "kTile"))

    def accumulate(bw: CodeWriter, row: str, slot: str | None) -> None:
        known: dict[str, str] = {}
        load = full_load(row, bw)
        rw.emit_nodes(bw, rw.stat_targets(), known, load, vec, stats)
        x = known[plan.source] if plan.source in known else load(plan.source)
        for stat, acc in zip(step, accs, strict=True):
            bw.line(acc.add(stat.element(x, stats, rw.lit(vec)), slot if vec else "k"))

    _rows_loop(w, schedule, accumulate, vec, unroll)
    for stat, acc in zip(step, accs, strict=True):
        name = rw.stat_name(stat.name)
        if vec:
            for line in acc.merge_copies():
                w.line(line)
            w.line(f"const Vec {name} = {acc.total(horizontal=False)};")
            stats[stat.name] = name
        else:
            w.line(f"float {name}[kTile];")
            with lane_loop(w, schedule):
                w.line(f"{name}[k] = {acc.total(horizontal=False, slot='k')};")
            stats[stat.name] = f"{name}[k]"


def _reduced_stage_i(rw: ReductionWriter, stats: dict[str, str]) -> dict[str, str]:
    plan, w, vec = rw.plan, rw.w, rw.vec
    if plan.program.reduced_value is None:
        return {}
    anchor = rw.namer.get(plan.anchor.name)
    targets = rw.reduced_targets() | set(rw.reduced_out)
    known: dict[str, str] = {}

    def load(name: str) -> str:
        pointer = rw.operands[name][0]
        so, _, si = rw.strides(name, reduced=True)
        base = offset([("o", so)])
        if vec:
            return f"Vec::loadu({pointer} + {base} + i, n)" if si else f"Vec({pointer}[{base}])"
        return f"{pointer}[{base} + i + k]" if si else f"{pointer}[{base}]"

    def store_outputs(writer: CodeWriter) -> None:
        for name, pointer in rw.reduced_out.items():
            if vec:
                writer.line(f"{known[name]}.store({pointer} + o * kInner + i, n);")
            else:
                writer.line(f"{pointer}[o * kInner + i + k] = {known[name]};")

    value = plan.program.reduced_value(stats, rw.lit(vec))
    if vec:
        w.line(f"const Vec {anchor} = {value};")
        known[plan.anchor.name] = anchor
        rw.emit_nodes(w, targets, known, load, True, stats)
        store_outputs(w)
    else:
        computed = [n.name for n in rw.needed(targets, {plan.anchor.name: anchor})]
        arrays = [anchor] + [rw.namer.get(n) for n in computed]
        w.line("float " + ", ".join(f"{a}[kTile]" for a in arrays) + ";")
        with lane_loop(w, rw.schedule):
            w.line(f"{anchor}[k] = {value};")
            known[plan.anchor.name] = f"{anchor}[k]"
            rw.emit_nodes(
                w, targets, known, load, False, stats, assign=lambda n, e: f"{n}[k] = {e};"
            )
            store_outputs(w)
    return {k: v for k, v in known.items() if k in plan.reduced or k == plan.anchor.name}


def _rows_loop(
    w: CodeWriter, schedule: dict[str, Any], body: RowBody, vec: bool, unroll: int
) -> None:
    """`for r` over the reduced rows; `body(writer, row, slot)` runs once per row (inside a
    lane loop for scalar tiles); `unroll` rows per iteration feed separate accumulators."""

    def run(row: str, slot: str | None) -> None:
        if vec:
            body(w, row, slot)
        else:
            with lane_loop(w, schedule):
                body(w, row, slot)

    if unroll <= 1:
        with w.block("for (int64_t r = 0; r < kReduced; ++r)"):
            run("r", None)
        return
    with w.block(""):
        w.line("int64_t r = 0;")
        with w.block(f"for (; r + {unroll} <= kReduced; r += {unroll})"):
            w.pragma(f"GCC unroll {unroll}")
            with w.block(f"for (int u = 0; u < {unroll}; ++u)"):
                w.line("const int64_t rr = r + u;")
                run("rr", "u")
        with w.block("for (; r < kReduced; ++r)"):
            run("r", "0")


@contextmanager
def lane_loop(w: CodeWriter, schedule: dict[str, Any]) -> Iterator[None]:
    """`for (k < n)` over a scalar tile's lanes, under the schedule's pragmas."""
    scalar_loop_pragmas(w, schedule)
    with w.block("for (int64_t k = 0; k < n; ++k)"):
        yield
