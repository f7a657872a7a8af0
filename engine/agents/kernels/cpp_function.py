"""One group's C++ function: its name, signature, argument checks, outputs and call.

Every group function takes its tensors as `const at::Tensor&` (the values it reads from
outside the group, then the module parameters an anchor reads from `self`), checks each
is a float32 CPU tensor of the captured shape, and returns its outputs (a tuple for
several). The text between `// --- group gN: ... ---` and `// --- end gN ---` is the
group's alone, so the debug step can tell which group a compiler error is in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from engine.agents.kernels.cpp_text import CodeWriter, Namer, shape_literal
from engine.agents.kernels.ir import CapturedGraph, FusionGroup, GeneratedGroup

MAX_NAME_OPS = 6


class UnsupportedGroup(ValueError):
    """A group the C++ generator cannot write; the message is the reason."""


def function_name(graph: CapturedGraph, group: FusionGroup) -> str:
    """`g0_linear_add_relu`: the group id and its operators, in order."""
    kinds = [graph.node(n).kind for n in group.nodes]
    shown = kinds[:MAX_NAME_OPS] + (["etc"] if len(kinds) > MAX_NAME_OPS else [])
    return re.sub(r"\W", "_", "_".join([group.id, *shown]))


def describe_schedule(schedule: dict[str, Any], keys: tuple[str, ...]) -> str:
    return " ".join(f"{k}={schedule[k]}" for k in keys)


@dataclass(slots=True)
class Param:
    python: str  # what forward() passes: a graph value's name or `self.<...>`
    cpp: str  # the C++ parameter
    label: str  # the name in error messages
    shape: tuple[int, ...] | None  # checked when the capture recorded it
    stem: str  # what its C++ identifiers start with


@dataclass(slots=True)
class KernelFunction:
    """Collects a group function's pieces while its body is written, then assembles it."""

    graph: CapturedGraph
    group: FusionGroup
    schedule: dict[str, Any]
    name: str = ""
    namer: Namer = field(init=False)
    body: CodeWriter = field(default_factory=CodeWriter)
    params: list[Param] = field(default_factory=list)
    includes: list[str] = field(default_factory=list)
    _by_python: dict[str, Param] = field(default_factory=dict)
    _pointers: dict[str, str] = field(default_factory=dict)
    _outputs: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.name = function_name(self.graph, self.group)
        values = [*self.group.nodes, *self.group.inputs]
        self.namer = Namer(values)
        self.body.depth = 1

    def input(self, node_name: str) -> Param:
        """The parameter carrying graph value `node_name` (added once)."""
        if node_name not in self._by_python:
            meta = self.graph.node(node_name).meta
            param = Param(
                node_name,
                self.namer.get(node_name, "in"),
                node_name,
                meta.shape if meta is not None else None,
                node_name,
            )
            self.params.append(param)
            self._by_python[node_name] = param
        return self._by_python[node_name]

    def attribute(self, expression: str, label: str) -> Param:
        """A module parameter the anchor reads, e.g. `self.gemm.weight` (shape unknown)."""
        if expression not in self._by_python:
            cpp = self.namer.get(expression, "in", base=label)
            param = Param(expression, cpp, expression, None, label)
            self.params.append(param)
            self._by_python[expression] = param
        return self._by_python[expression]

    def pointer(self, value: str) -> str:
        """`const float*` to the contiguous data of graph value (or attribute) `value`,
        declared once."""
        if value not in self._pointers:
            param = self._by_python.get(value) or self.input(value)
            contiguous = self.namer.get(value, "c", base=param.stem)
            pointer = self.namer.get(value, "ptr", base=param.stem)
            self.body.line(f"const at::Tensor {contiguous} = {param.cpp}.contiguous();")
            self.body.line(f"const float* {pointer} = {contiguous}.data_ptr<float>();")
            self._pointers[value] = pointer
        return self._pointers[value]

    def output(self, node_name: str, shape: tuple[int, ...], reuse: str | None = None) -> str:
        """`float*` to a new contiguous float32 buffer for output `node_name` (or to the
        tensor variable `reuse`, written in place)."""
        tensor = self.namer.get(node_name, "out")
        pointer = self.namer.get(node_name, "ptr")
        if reuse is None:
            self.body.line(
                f"at::Tensor {tensor} = at::empty({shape_literal(shape)}, at::dtype(at::kFloat));"
            )
        else:
            self.body.line(f"at::Tensor {tensor} = {reuse};  // written in place")
        self.body.line(f"float* {pointer} = {tensor}.data_ptr<float>();")
        self._outputs[node_name] = tensor
        return pointer

    def tensor(self, tensor_variable: str, node_name: str) -> None:
        """Return an already computed tensor variable as output `node_name`."""
        self._outputs[node_name] = tensor_variable

    def source(self, summary: str, description: list[str]) -> str:
        missing = [o for o in self.group.outputs if o not in self._outputs]
        if missing:
            raise UnsupportedGroup(f"{self.group.id}: outputs {missing} were not written")
        outputs = [self._outputs[o] for o in self.group.outputs]
        if len(outputs) == 1:
            result_type, result = "at::Tensor", outputs[0]
        else:
            result_type = "std::tuple<" + ", ".join(["at::Tensor"] * len(outputs)) + ">"
            result = "std::make_tuple(" + ", ".join(outputs) + ")"
        w = CodeWriter()
        w.comment(f"--- group {self.group.id}: {summary} ---")
        for line in description:
            w.comment(line)
        for include in self.includes:
            w.line(f"#include <{include}>")
        params = [f"const at::Tensor& {p.cpp}" for p in self.params]
        head = f"{result_type} {self.name}({', '.join(params)})"
        if len(head) > 98:  # one parameter a line
            head = f"{result_type} {self.name}(\n    " + ",\n    ".join(params) + ")"
        with w.block(head):
            for param in self.params:
                shape = f", {shape_literal(param.shape)}" if param.shape is not None else ""
                w.line(f'stark::check_input({param.cpp}, "{self.name}", "{param.label}"{shape});')
            w.lines.extend(self.body.lines)
            w.line(f"return {result};")
        w.comment(f"--- end {self.group.id} ---")
        return w.text()

    def generated(self, summary: str, description: list[str]) -> GeneratedGroup:
        source = self.source(summary, description)
        arguments = ", ".join(p.python for p in self.params)
        return GeneratedGroup(
            group_id=self.group.id,
            backend="cpp",
            call=f"_stark_ext.{self.name}({arguments})",
            outputs=tuple(self.group.outputs),
            functions=(self.name,),
            cpp_source=source,
            schedule=dict(self.schedule),
        )
