"""The offline agent's catalogue of semantics-preserving transformations: what each does,
where it applies (`analyse_reference`), the header that records a set, and the anchors a
plan edits. The code generator that turns a reference plus a set into a standalone
`ModelNew` is `engine.agents.render`.

Generated modules inline the reference (minus `get_inputs` / `get_init_inputs` and any
`__main__` block) and define `class ModelNew(Model)`: subclassing keeps the order in which
parameters are created, so both models get identical weights under the same RNG seed. The
first line records the transformation set as JSON (`# stark-offline: {...}`), so later roles
(plan, debug) can read what a parent did without guessing from its code.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

HEADER_PREFIX = "# stark-offline: "
ANCHOR_BEGIN = "# <<<IMPROVE BEGINS>>>"
ANCHOR_END = "# <<<IMPROVE ENDS>>>"


@dataclass(frozen=True, slots=True)
class Transform:
    name: str
    group: str | None  # at most one transform per group (compile modes, precisions)
    devices: frozenset[str]
    needs_conv: bool  # only meaningful when the reference has 2-D convolutions
    risky: bool  # changes numerics: the benchmarker will usually reject it at fp32 tolerance
    step: str  # what the plan says it does


BOTH = frozenset({"cpu", "cuda"})
CUDA = frozenset({"cuda"})

CATALOGUE: dict[str, Transform] = {
    t.name: t
    for t in (
        Transform(
            "inference_mode",
            None,
            BOTH,
            False,
            False,
            "run forward under torch.inference_mode() to skip autograd bookkeeping",
        ),
        Transform(
            "compile:default",
            "compile",
            BOTH,
            False,
            False,
            "torch.compile(mode='default', dynamic=False) to fuse the op chain into one kernel",
        ),
        Transform(
            "compile:reduce-overhead",
            "compile",
            CUDA,
            False,
            False,
            "torch.compile(mode='reduce-overhead', dynamic=False): fused kernels replayed "
            "from CUDA graphs",
        ),
        Transform(
            "compile:max-autotune-no-cudagraphs",
            "compile",
            BOTH,
            False,
            False,
            "torch.compile(mode='max-autotune-no-cudagraphs', dynamic=False) to autotune "
            "GEMM/conv templates and fusion choices",
        ),
        Transform(
            "channels_last",
            None,
            BOTH,
            True,
            False,
            "convert conv weights and 4-D inputs to channels_last memory format",
        ),
        Transform(
            "cudnn_benchmark",
            None,
            CUDA,
            True,
            False,
            "enable torch.backends.cudnn.benchmark inside forward to pick the fastest conv "
            "algorithm",
        ),
        Transform(
            "cuda_graph",
            None,
            CUDA,
            False,
            False,
            "capture forward once into a torch.cuda.CUDAGraph with static inputs and replay it",
        ),
        Transform(
            "bf16_autocast",
            "precision",
            BOTH,
            False,
            True,
            "run forward under torch.autocast(dtype=bfloat16) and cast outputs back",
        ),
        Transform(
            "fp16",
            "precision",
            BOTH,
            False,
            True,
            "convert weights and inputs to float16 (.half()) and cast outputs back",
        ),
        Transform(
            "tf32",
            "precision",
            CUDA,
            False,
            True,
            "allow TF32 tensor-core matmuls and convolutions inside forward",
        ),
    )
}

# Pairs that must not appear together (both capture CUDA graphs).
CONFLICTS: frozenset[frozenset[str]] = frozenset(
    {frozenset({"cuda_graph", "compile:reduce-overhead"})}
)

# Canonical order in headers and generated code.
ORDER = list(CATALOGUE)

COMPILE_MODES = {
    "compile:default": "default",
    "compile:reduce-overhead": "reduce-overhead",
    "compile:max-autotune-no-cudagraphs": "max-autotune-no-cudagraphs",
}


@dataclass(frozen=True, slots=True)
class ReferenceFeatures:
    """What the reference does, as far as choosing transformations is concerned."""

    has_conv2d: bool
    has_conv: bool
    has_matmul: bool
    forward_ops: int  # calls and arithmetic operators in Model.forward: how much to fuse
    has_reduction: bool

    def __str__(self) -> str:
        kinds = [
            name
            for name, present in (
                ("convolutions", self.has_conv),
                ("matmuls", self.has_matmul),
                ("reductions", self.has_reduction),
            )
            if present
        ]
        kinds.append(f"{self.forward_ops} ops in forward")
        return "a model with " + ", ".join(kinds)


_CONV2D = re.compile(r"\b(Conv2d|ConvTranspose2d|conv2d|conv_transpose2d)\b")
_CONV = re.compile(r"\b(Conv[123]d|ConvTranspose[123]d|conv[123]d|conv_transpose[123]d)\b")
_MATMUL = re.compile(r"\b(Linear|Bilinear|matmul|mm|bmm|addmm|baddbmm|einsum|linear)\b|@")
_REDUCTION = re.compile(
    r"\b(sum|mean|softmax|log_softmax|norm|amax|amin|max|min|logsumexp|var|std|cumsum)\b"
)


def analyse_reference(source: str) -> ReferenceFeatures:
    tree = parse_module(source, "reference")
    model = find_class(tree, "Model")
    if model is None:
        raise ValueError("the reference defines no class Model")
    forward = next(
        (n for n in model.body if isinstance(n, ast.FunctionDef) and n.name == "forward"), None
    )
    forward_src = ast.unparse(forward) if forward is not None else ""
    forward_ops = 0
    if forward is not None:
        for node in ast.walk(forward):
            if isinstance(node, ast.Call | ast.BinOp | ast.UnaryOp):
                forward_ops += 1
    return ReferenceFeatures(
        has_conv2d=bool(_CONV2D.search(source)),
        has_conv=bool(_CONV.search(source)),
        has_matmul=bool(_MATMUL.search(ast.unparse(model))),
        forward_ops=forward_ops,
        has_reduction=bool(_REDUCTION.search(forward_src)),
    )


def applicable(name: str, device: str, features: ReferenceFeatures) -> bool:
    transform = CATALOGUE.get(name)
    if transform is None or device not in transform.devices:
        return False
    return not (transform.needs_conv and not features.has_conv2d)


def normalise(names: Iterable[str], device: str, features: ReferenceFeatures) -> list[str]:
    """Known, applicable, one per group, no conflicting pair; in canonical order.

    When two names share a group, the later one wins (a plan that lists a replacement).
    """
    chosen: dict[str, str] = {}
    for raw in names:
        name = canonical_name(raw)
        if name is None or not applicable(name, device, features):
            continue
        group = CATALOGUE[name].group or name
        chosen[group] = name
    result = [n for n in ORDER if n in chosen.values()]
    for pair in CONFLICTS:
        if pair <= set(result):
            result.remove("cuda_graph")
    return result


_ALIASES = {
    "compile": "compile:default",
    "torch.compile": "compile:default",
    "compile:max-autotune": "compile:max-autotune-no-cudagraphs",
    "half": "fp16",
    "float16": "fp16",
    "bf16": "bf16_autocast",
    "bfloat16": "bf16_autocast",
    "autocast": "bf16_autocast",
    "cudagraph": "cuda_graph",
    "cuda_graphs": "cuda_graph",
    "cudnn.benchmark": "cudnn_benchmark",
    "inference": "inference_mode",
}


def canonical_name(raw: str) -> str | None:
    name = raw.strip().lower().replace(" ", "")
    if name in CATALOGUE:
        return name
    return _ALIASES.get(name)


def names_in_text(text: str) -> list[str]:
    """Catalogue names mentioned in free text (a plan summary from another node)."""
    return [name for name in ORDER if name in text]


def transforms_in_summary(summary: str) -> list[str]:
    """The resulting set of a plan summary "<title>: <steps>" whose title ends in
    "-> a + b" (the offline plan titles); otherwise every name the text mentions."""
    if "->" in summary:
        result = summary.split("->", 1)[1].split(": ", 1)[0]
        return names_in_text(result)
    return names_in_text(summary)


# --- headers ------------------------------------------------------------------------------


def make_header(meta: dict[str, object]) -> str:
    return HEADER_PREFIX + json.dumps(meta, sort_keys=True)


def read_header(code: str | None) -> dict[str, object] | None:
    """The `# stark-offline:` metadata of a generated module, or None."""
    if not code:
        return None
    for line in code.splitlines()[:5]:
        if line.startswith(HEADER_PREFIX):
            try:
                meta = json.loads(line[len(HEADER_PREFIX) :])
            except json.JSONDecodeError:
                return None
            return meta if isinstance(meta, dict) else None
    return None


def header_transforms(code: str | None) -> list[str] | None:
    meta = read_header(code)
    if meta is None:
        return None
    names = meta.get("transforms")
    if not isinstance(names, list):
        return None
    return [str(n) for n in names if str(n) in CATALOGUE]


# --- anchors ------------------------------------------------------------------------------


def anchor(code: str) -> str:
    """Mark `ModelNew.__init__` and `ModelNew.forward` (the spans a plan changes).

    Falls back to the whole `ModelNew` class, or the whole file when it has none.
    """
    lines = code.splitlines()
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return "\n".join([ANCHOR_BEGIN, *lines, ANCHOR_END]) + "\n"
    cls = find_class(tree, "ModelNew")
    if cls is None:
        return "\n".join([ANCHOR_BEGIN, *lines, ANCHOR_END]) + "\n"
    spans: list[tuple[int, int, int]] = []  # (first line, last line, indent), 1-based
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and node.name in ("__init__", "forward"):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            spans.append((first, node.end_lineno or node.lineno, node.col_offset))
    if not spans:
        first = min([cls.lineno, *(d.lineno for d in cls.decorator_list)])
        spans.append((first, cls.end_lineno or cls.lineno, cls.col_offset))
    out: list[str] = []
    starts = {s[0]: s[2] for s in spans}
    ends = {s[1]: s[2] for s in spans}
    for number, line in enumerate(lines, start=1):
        if number in starts:
            out.append(" " * starts[number] + ANCHOR_BEGIN)
        out.append(line)
        if number in ends:
            out.append(" " * ends[number] + ANCHOR_END)
    return "\n".join(out) + "\n"


def parse_module(source: str, what: str) -> ast.Module:
    """The parsed module; a ValueError naming `what` when it does not parse."""
    try:
        return ast.parse(source)
    except SyntaxError as exc:
        raise ValueError(f"the {what} does not parse: {exc.msg} (line {exc.lineno})") from None


def find_class(tree: ast.Module, name: str) -> ast.ClassDef | None:
    """The top-level class `name`, if any."""
    return next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)
