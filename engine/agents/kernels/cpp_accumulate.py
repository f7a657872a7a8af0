"""Reduction accumulators as C++ text, for the schedule's `accumulate` and `vector`.

Vector code keeps one `stark::Sum<Vec>` (or `KahanSum`, `DoubleSum`, `Max`, `Min`) per
unrolled vector; scalar code keeps a plain `float`/`double` that `#pragma omp simd
reduction(...)` can split across lanes, except a Kahan sum, whose compensation is a
dependency omp simd cannot express (that loop gets no simd pragma).
"""

from __future__ import annotations

from dataclasses import dataclass

IDENTITY = {"sum": "0.0f", "max": "-stark::kInf", "min": "stark::kInf"}
_STRUCT = {"max": "Max", "min": "Min"}
_SUM_STRUCT = {"float": "Sum", "double": "DoubleSum", "kahan": "KahanSum"}


@dataclass(frozen=True, slots=True)
class Accumulator:
    name: str  # the C++ variable
    combine: str  # "sum" | "max" | "min"
    accumulate: str  # "float" | "double" | "kahan"
    lane_type: str  # "Vec" or "float": what one accumulator holds
    copies: int = 1  # independent accumulators (vector unroll), an array when > 1

    @property
    def is_struct(self) -> bool:
        return self.lane_type == "Vec" or (self.combine == "sum" and self.accumulate == "kahan")

    @property
    def simd_ok(self) -> bool:
        return not (self.combine == "sum" and self.accumulate == "kahan")

    def struct_type(self) -> str:
        base = _SUM_STRUCT[self.accumulate] if self.combine == "sum" else _STRUCT[self.combine]
        return f"stark::{base}<{self.lane_type}>"

    def declare(self, lanes: str | None = None) -> str:
        """The declaration; `lanes` makes it an array of one accumulator per lane."""
        if self.is_struct or lanes:
            count = lanes or (str(self.copies) if self.copies > 1 else None)
            return f"{self.struct_type()} {self.name}" + (f"[{count}]" if count else "") + ";"
        if self.combine == "sum":
            kind = "double" if self.accumulate == "double" else "float"
            return f"{kind} {self.name} = {'0.0' if kind == 'double' else '0.0f'};"
        return f"float {self.name} = {IDENTITY[self.combine]};"

    def ref(self, slot: str | None) -> str:
        return f"{self.name}[{slot}]" if slot is not None else self.name

    def add(self, value: str, slot: str | None = None, count: str | None = None) -> str:
        """Accumulate `value`; `count` marks a vector tail whose other lanes are not data."""
        if count is not None:
            value = f"stark::first({value}, {count}, {IDENTITY[self.combine]})"
        target = self.ref(slot)
        if self.is_struct or slot is not None:
            return f"{target}.add({value});"
        if self.combine == "sum":
            return f"{target} += {value};"
        return f"{target} = stark::{'maximum' if self.combine == 'max' else 'minimum'}({target}, {value});"

    def omp_clause(self) -> str:
        """The `reduction(...)` clause for a plain scalar accumulator ("" for a struct)."""
        if self.is_struct:
            return ""
        op = "+" if self.combine == "sum" else self.combine
        return f"reduction({op}:{self.name})"

    def merge_copies(self) -> list[str]:
        if self.copies <= 1:
            return []
        return [f"for (int u = 1; u < {self.copies}; ++u) {self.name}[0].merge({self.name}[u]);"]

    def total(self, horizontal: bool, slot: str | None = None) -> str:
        """The accumulated value: across lanes (a float) or per lane (`lanes()`)."""
        target = self.ref(slot if slot is not None else ("0" if self.copies > 1 else None))
        if self.is_struct or slot is not None:
            return f"{target}.{'horizontal' if horizontal else 'lanes'}()"
        if self.combine == "sum" and self.accumulate == "double":
            return f"static_cast<float>({target})"
        return target
