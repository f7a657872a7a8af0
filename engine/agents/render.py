"""Rendering a transformation set into a complete candidate file (`ModelNew`).

The offline agent's CODE and DEBUG steps write their kernels with `render_module`: the
reference's code (without its input helpers and `__main__` block), a header recording the
set (`engine.agents.transforms.make_header`), and a `ModelNew` subclass of `Model` that
applies each transformation of the catalogue, so the weights are created in the same order.
"""

from __future__ import annotations

import ast
import re

from engine.agents.transforms import CATALOGUE, COMPILE_MODES, make_header, parse_module


def strip_reference(source: str) -> tuple[list[str], str]:
    """(future imports, body): the reference without its input helpers and `__main__` block."""
    tree = parse_module(source, "reference")
    lines = source.splitlines()
    drop: set[int] = set()
    futures: list[str] = []
    for node in tree.body:
        first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
        last = node.end_lineno or node.lineno
        input_helper = isinstance(node, ast.FunctionDef) and node.name in (
            "get_inputs",
            "get_init_inputs",
        )
        main_block = isinstance(node, ast.If) and "__name__" in ast.unparse(node.test)
        if input_helper or main_block:
            drop.update(range(first, last + 1))
        elif isinstance(node, ast.ImportFrom) and node.module == "__future__":
            futures.append("\n".join(lines[first - 1 : last]))
            drop.update(range(first, last + 1))
    kept = [line for number, line in enumerate(lines, start=1) if number not in drop]
    body = re.sub(r"\n{3,}", "\n\n\n", "\n".join(kept)).strip("\n")
    return futures, body


def render_module(
    reference_src: str,
    transforms: list[str],
    *,
    title: str,
    meta: dict[str, object] | None = None,
) -> str:
    """A complete candidate file applying `transforms` (already normalised) to the reference."""
    futures, body = strip_reference(reference_src)
    header = make_header({"transforms": list(transforms), **(meta or {})})
    title = " ".join(title.split())  # one comment line, whatever the plan's title held
    chosen = set(transforms)
    precision = next((t for t in transforms if CATALOGUE[t].group == "precision"), None)
    compile_name = next((t for t in transforms if t in COMPILE_MODES), None)

    out: list[str] = [header, f"# {title}"]
    out += futures
    if not _imports_torch(reference_src):
        out += ["import torch", ""]
    out += [body, "", ""]
    out += [
        "# " + "-" * 76,
        "# STARK offline agent: ModelNew = the reference Model with these transformations:",
    ]
    out += [f"#   - {t}: {CATALOGUE[t].step}" for t in transforms] or ["#   (none: plain eager)"]
    out += ["# " + "-" * 76, "", ""]
    if precision in ("fp16", "bf16_autocast"):
        out += _CAST_HELPER + ["", ""]

    doc = ", ".join(transforms) if transforms else "eager"
    out += [
        "class ModelNew(Model):",
        f'    """The reference model, run with: {doc}."""',
        "",
        "    def __init__(self, *args, **kwargs):",
        "        super().__init__(*args, **kwargs)",
    ]
    if "channels_last" in chosen:
        out.append("        self.to(memory_format=torch.channels_last)")
    if precision == "fp16":
        out.append("        self.half()")
    if compile_name is not None:
        mode = COMPILE_MODES[compile_name]
        out.append(
            f'        self._stark_run = torch.compile(self._stark_eager, mode="{mode}", '
            "dynamic=False)"
        )
    else:
        out.append("        self._stark_run = self._stark_eager")
    if "cuda_graph" in chosen:
        out += [
            "        self._stark_graph = None",
            "        self._stark_graph_key = None",
            "        self._stark_static_inputs = []",
            "        self._stark_static_output = None",
        ]
    out += [
        "",
        "    def _stark_eager(self, *inputs):",
        "        return Model.forward(self, *inputs)",
        "",
    ]
    if "cuda_graph" in chosen:
        out += _GRAPH_METHOD + [""]

    out.append("    def forward(self, *inputs):")
    if precision in ("fp16", "bf16_autocast"):
        out += [
            "        out_dtype = next(",
            "            (x.dtype for x in inputs if isinstance(x, torch.Tensor) and x.is_floating_point()),",
            "            torch.float32,",
            "        )",
        ]
    if "channels_last" in chosen:
        out += [
            "        inputs = tuple(",
            "            x.contiguous(memory_format=torch.channels_last)",
            "            if isinstance(x, torch.Tensor) and x.dim() == 4",
            "            else x",
            "            for x in inputs",
            "        )",
        ]
    if precision == "fp16":
        out.append("        inputs = _stark_cast_floats(inputs, torch.float16)")
    call = "self._stark_replay(*inputs)" if "cuda_graph" in chosen else "self._stark_run(*inputs)"
    scoped = [
        (f, v)
        for f, v in (
            ("torch.backends.cudnn.benchmark", "cudnn_benchmark" in chosen),
            ("torch.backends.cuda.matmul.allow_tf32", precision == "tf32"),
            ("torch.backends.cudnn.allow_tf32", precision == "tf32"),
        )
        if v
    ]
    contexts: list[str] = []
    if "inference_mode" in chosen:
        contexts.append("torch.inference_mode()")
    if precision == "bf16_autocast":
        contexts.append(
            "torch.autocast(device_type=inputs[0].device.type if inputs and "
            "isinstance(inputs[0], torch.Tensor) else 'cpu', dtype=torch.bfloat16)"
        )
    indent = "        "
    if scoped:
        # Global backend flags are set for this call only, so the reference is unaffected.
        out += [f"{indent}saved = (", *(f"{indent}    {f}," for f, _ in scoped), f"{indent})"]
        out += [f"{indent}{f} = True" for f, _ in scoped]
        out.append(f"{indent}try:")
        indent += "    "
    for context in contexts:
        out.append(f"{indent}with {context}:")
        indent += "    "
    out.append(f"{indent}out = {call}")
    if scoped:
        out.append("        finally:")
        out += [
            "            (",
            *(f"                {f}," for f, _ in scoped),
            "            ) = saved",
        ]
    if precision in ("fp16", "bf16_autocast"):
        out.append("        return _stark_cast_floats(out, out_dtype)")
    else:
        out.append("        return out")
    return "\n".join(out) + "\n"


_CAST_HELPER = [
    "def _stark_cast_floats(value, dtype):",
    '    """Cast floating-point tensors (also inside tuples/lists) to `dtype`."""',
    "    if isinstance(value, torch.Tensor):",
    "        return value.to(dtype) if value.is_floating_point() else value",
    "    if isinstance(value, (list, tuple)):",
    "        return type(value)(_stark_cast_floats(v, dtype) for v in value)",
    "    return value",
]

_GRAPH_METHOD = [
    "    def _stark_replay(self, *inputs):",
    '        """Capture once per input signature into a CUDA graph, then copy inputs in and',
    '        replay; the output is cloned so callers never see the static buffer change."""',
    "        key = tuple(",
    "            (tuple(x.shape), x.dtype, x.device) if isinstance(x, torch.Tensor) else x",
    "            for x in inputs",
    "        )",
    "        if self._stark_graph is None or key != self._stark_graph_key:",
    "            self._stark_static_inputs = [",
    "                x.clone() if isinstance(x, torch.Tensor) else x for x in inputs",
    "            ]",
    "            for _ in range(3):  # warm up: lazy init, autotuning and compilation",
    "                self._stark_run(*self._stark_static_inputs)",
    "            torch.cuda.synchronize()",
    "            graph = torch.cuda.CUDAGraph()",
    "            with torch.cuda.graph(graph):",
    "                self._stark_static_output = self._stark_run(*self._stark_static_inputs)",
    "            self._stark_graph = graph",
    "            self._stark_graph_key = key",
    "        for static, x in zip(self._stark_static_inputs, inputs):",
    "            if isinstance(static, torch.Tensor):",
    "                static.copy_(x)",
    "        self._stark_graph.replay()",
    "        out = self._stark_static_output",
    "        if isinstance(out, torch.Tensor):",
    "            return out.clone()",
    "        return type(out)(o.clone() if isinstance(o, torch.Tensor) else o for o in out)",
]


def _imports_torch(source: str) -> bool:
    """Whether the reference binds the name `torch` with a top-level `import torch`."""
    for node in parse_module(source, "reference").body:
        if isinstance(node, ast.Import) and any(
            alias.name == "torch" and alias.asname is None for alias in node.names
        ):
            return True
    return False
