"""Targeted edits of a kernel the offline agent did not write (a user's or a model's).

The offline agent cannot reason about arbitrary code, so it never "fixes" a foreign kernel
by replacing it with the reference. It recognises a few failures whose repair is mechanical
and makes exactly that edit, keeping the rest of the kernel as it was:

| failure (benchmarker / torch message) | edit |
|---|---|
| `output N: dtype torch.X != expected torch.Y` | cast floating outputs to torch.Y |
| `output N aliases an input` | return clones of the outputs |
| `candidate modified its inputs` | work on clones of the inputs |
| `view size is not compatible with input tensor's size and stride` | `.view(` -> `.reshape(` |
| non-contiguous / stride errors | make tensor inputs `.contiguous()` |

Anything else is a refusal with the reason, which the search records as such.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from engine.agents.failures import classify, first_line

_TORCH_DTYPES = {
    "float": "torch.float32",
    "float32": "torch.float32",
    "double": "torch.float64",
    "float64": "torch.float64",
    "half": "torch.float16",
    "float16": "torch.float16",
    "bfloat16": "torch.bfloat16",
}
_OUTPUT_DTYPE = re.compile(r"dtype torch\.(\w+) != expected torch\.(\w+)")
_VIEW = re.compile(r"view size is not compatible|use \.reshape\(\.\.\.\) instead", re.I)
_CONTIGUOUS = re.compile(
    r"non-contiguous|not contiguous|must be contiguous|is_contiguous|expected contiguous|"
    r"contiguous\(\) is required|stride",
    re.I,
)
_ALIASES = re.compile(r"aliases an input", re.I)
_MODIFIED = re.compile(r"modified its inputs", re.I)

EDIT_NOTE = "# stark-offline debug edit: "  # not the "# stark-offline: " header: still foreign
UNFIXED = "_stark_unfixed_forward"


@dataclass(frozen=True, slots=True)
class FixOutcome:
    """A targeted edit (`code` set) or a refusal (`code` None); `reason` says which."""

    code: str | None
    reason: str


def fix_foreign_kernel(code: str, log: str) -> FixOutcome:
    """Edit `code` for the failure in `log`, or say why the offline agent cannot."""
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        return FixOutcome(None, f"the kernel does not parse ({exc.msg}, line {exc.lineno})")
    forward = _model_new_forward(tree)
    if forward is None:
        return FixOutcome(None, "the kernel defines no ModelNew.forward to edit")

    if _VIEW.search(log):
        edited = _view_to_reshape(code, tree)
        if edited != code:
            return _done(edited, "a .view() on a non-contiguous tensor: use .reshape()")
    wrap: tuple[str | None, str | None, str] | None = None  # (inputs map, outputs map, why)
    if match := _OUTPUT_DTYPE.search(log):
        expected = _TORCH_DTYPES.get(match.group(2).lower())
        if expected:
            wrap = (None, _cast(expected), f"outputs were {match.group(1)}; cast to {expected}")
    elif _ALIASES.search(log):
        wrap = (None, "lambda t: t.clone()", "an output aliased an input; return a copy")
    elif _MODIFIED.search(log):
        wrap = ("lambda t: t.clone()", None, "forward wrote into its inputs; work on copies")
    elif _CONTIGUOUS.search(log):
        wrap = ("lambda t: t.contiguous()", None, "non-contiguous inputs: make them contiguous")
    if wrap is None:
        return FixOutcome(
            None,
            f"a {classify(log)} failure ({first_line(log)}) in a kernel the offline agent did "
            "not write; it only repairs dtype, aliasing, input-mutation and contiguity "
            "failures by a targeted edit, and will not replace the kernel with the reference",
        )
    if any(
        isinstance(n, ast.FunctionDef) and n.name == UNFIXED for n in ast.walk(tree)
    ):  # one wrapper per kernel: a second would only hide the first edit's failure
        return FixOutcome(None, "the offline agent's earlier edit of this kernel did not fix it")
    inputs, outputs, why = wrap
    return _done(_wrap_forward(code, tree, forward, inputs, outputs, why), why)


def _done(code: str, why: str) -> FixOutcome:
    return FixOutcome(f"{EDIT_NOTE}{why}\n{code}", why)


def _cast(dtype: str) -> str:
    return f"lambda t: t.to({dtype}) if t.is_floating_point() else t"


def _model_new(tree: ast.Module) -> ast.ClassDef | None:
    return next(
        (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ModelNew"), None
    )


def _model_new_forward(tree: ast.Module) -> ast.FunctionDef | None:
    cls = _model_new(tree)
    if cls is None:
        return None
    return next(
        (n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "forward"), None
    )


def _view_to_reshape(code: str, tree: ast.Module) -> str:
    """`.view(` -> `.reshape(` everywhere except in a `class Model` the file may inline."""
    lines = code.splitlines(keepends=True)
    skip: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Model":
            skip.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return "".join(
        line if number in skip else line.replace(".view(", ".reshape(")
        for number, line in enumerate(lines, start=1)
    )


def _wrap_forward(
    code: str,
    tree: ast.Module,
    forward: ast.FunctionDef,
    inputs: str | None,
    outputs: str | None,
    why: str,
) -> str:
    """Rename ModelNew.forward and add a forward that maps tensors in and/or out around it."""
    lines = code.splitlines()
    def_line = lines[forward.lineno - 1]
    lines[forward.lineno - 1] = def_line.replace("def forward(", f"def {UNFIXED}(", 1)
    indent = " " * forward.col_offset
    body = indent + "    "
    method = [
        "",
        f"{indent}def forward(self, *args, **kwargs):",
        f'{body}"""The original forward, with the offline agent\'s edit: {why}."""',
    ]
    if inputs:
        method.append(f"{body}args = _stark_map_tensors(tuple(args), {inputs})")
    method.append(f"{body}out = self.{UNFIXED}(*args, **kwargs)")
    method.append(
        f"{body}return _stark_map_tensors(out, {outputs})" if outputs else f"{body}return out"
    )
    cls = _model_new(tree)
    assert cls is not None
    end = cls.end_lineno or forward.end_lineno or len(lines)
    lines[end:end] = method
    lines += [
        "",
        "",
        "def _stark_map_tensors(value, fn):",
        '    """Apply `fn` to every tensor in `value` (also inside tuples and lists)."""',
        "    if isinstance(value, torch.Tensor):",
        "        return fn(value)",
        "    if isinstance(value, (list, tuple)):",
        "        return type(value)(_stark_map_tensors(v, fn) for v in value)",
        "    return value",
    ]
    if not _binds_torch(tree):
        at = _after_future_imports(tree)
        lines[at:at] = ["import torch"]
    return "\n".join(lines) + "\n"


def _binds_torch(tree: ast.Module) -> bool:
    return any(
        isinstance(node, ast.Import)
        and any(a.name == "torch" and a.asname is None for a in node.names)
        for node in tree.body
    )


def _after_future_imports(tree: ast.Module) -> int:
    """Line index after the module docstring and `from __future__` imports."""
    at = 0
    for index, node in enumerate(tree.body):
        is_doc = index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        is_future = isinstance(node, ast.ImportFrom) and node.module == "__future__"
        if is_doc or is_future:
            at = node.end_lineno or node.lineno
        else:
            break
    return at
