"""Writing C++ text: an indenting line writer, unique identifiers, float literals."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager

CPP_KEYWORDS = frozenset(
    [
        "alignas",
        "alignof",
        "and",
        "and_eq",
        "asm",
        "auto",
        "bitand",
        "bitor",
        "bool",
        "break",
        "case",
        "catch",
        "char",
        "char8_t",
        "char16_t",
        "char32_t",
        "class",
        "compl",
        "concept",
        "const",
        "consteval",
        "constexpr",
        "constinit",
        "const_cast",
        "continue",
        "co_await",
        "co_return",
        "co_yield",
        "decltype",
        "default",
        "delete",
        "do",
        "double",
        "dynamic_cast",
        "else",
        "enum",
        "explicit",
        "export",
        "extern",
        "false",
        "float",
        "for",
        "friend",
        "goto",
        "if",
        "inline",
        "int",
        "long",
        "mutable",
        "namespace",
        "new",
        "noexcept",
        "not",
        "not_eq",
        "nullptr",
        "operator",
        "or",
        "or_eq",
        "private",
        "protected",
        "public",
        "register",
        "reinterpret_cast",
        "requires",
        "return",
        "short",
        "signed",
        "sizeof",
        "static",
        "static_assert",
        "static_cast",
        "struct",
        "switch",
        "template",
        "this",
        "thread_local",
        "throw",
        "true",
        "try",
        "typedef",
        "typeid",
        "typename",
        "union",
        "unsigned",
        "using",
        "virtual",
        "void",
        "volatile",
        "wchar_t",
        "while",
        "xor",
        "xor_eq",
    ]
)
# Names the generated code uses itself (loop variables, namespaces, macros' neighbours).
GENERATED_LOCALS = frozenset(
    [
        "at",
        "std",
        "c10",
        "stark",
        "Vec",
        "begin",
        "end",
        "run",
        "start",
        "stop",
        "j",
        "k",
        "n",
        "r",
        "row",
        "tile",
        "lane",
        "lanes",
        "u",
        "rest",
        "kInf",
        "kNumel",
        "kRuns",
        "kRun",
        "kOuter",
        "kReduced",
        "kInner",
        "kTile",
        "kTiles",
        "base",
        "main",
        "NAN",
        "INFINITY",
        "assert",
        "errno",
        "o",
        "i",
        "rr",
        "no_grad",
    ]
) | frozenset(f"i{d}" for d in range(10))


class CodeWriter:
    """Lines of C++ with two-space indentation; `block` opens and closes a brace."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 0

    def line(self, text: str = "") -> None:
        self.lines.append(("  " * self.depth + text) if text else "")

    def comment(self, text: str) -> None:
        self.line(f"// {text}")

    def pragma(self, text: str) -> None:
        self.line(f"#pragma {text}")

    @contextmanager
    def block(self, head: str, tail: str = "}") -> Iterator[None]:
        """`head {` ... `tail`; an empty head opens a bare scope."""
        self.line(f"{head} {{" if head else "{")
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            self.line(tail)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


class Namer:
    """C++ identifiers for graph values and what the code derives from them (`x_ptr`...),
    unique within one function and clear of keywords and the generated code's own locals."""

    def __init__(self, values: list[str]) -> None:
        self.taken: set[str] = set(CPP_KEYWORDS | GENERATED_LOCALS)
        self.names: dict[tuple[str, str], str] = {}
        for value in values:  # graph values first: they keep their fx names where they can
            self.get(value)

    def get(self, value: str, role: str = "", base: str | None = None) -> str:
        """The identifier of (`value`, `role`); `base` spells it when `value` is no name
        (a module attribute such as `self.conv.bias`)."""
        key = (value, role)
        if key not in self.names:
            base = re.sub(r"\W", "_", base or value) + (f"_{role}" if role else "")
            if not re.match(r"[A-Za-z_]", base):
                base = "v_" + base
            name = base
            while name in self.taken or name.startswith("__"):
                name += "_"
            self.taken.add(name)
            self.names[key] = name
        return self.names[key]


def float_literal(value: object) -> str:
    """A Python number as a C++ float literal: what torch casts a scalar operand to."""
    if isinstance(value, bool):
        value = float(value)
    if not isinstance(value, int | float):
        raise ValueError(f"not a number: {value!r}")
    number = float(value)
    if math.isnan(number):
        return "std::numeric_limits<float>::quiet_NaN()"
    if math.isinf(number):
        return "stark::kInf" if number > 0 else "-stark::kInf"
    text = repr(number)
    if "e" not in text and "." not in text:
        text += ".0"
    return text + "f"


def shape_literal(shape: tuple[int, ...]) -> str:
    """`{2, 3}`: an at::IntArrayRef initializer."""
    return "{" + ", ".join(str(s) for s in shape) + "}"
