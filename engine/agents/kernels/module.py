"""The candidate file of a kernel-writer state: the reference, its generated kernels, and a
`ModelNew` whose forward replays the captured graph with each fused group as one call.

Layout of the file: the `# stark-offline:` header (`engine.agents.transforms.make_header`)
and the title; the reference minus its input helpers (`engine.agents.render.strip_reference`);
the kernels: all C++ groups in one raw string after `cpp_prelude()`, built by ONE
load_inline whose flags match this machine's vector ISA (computed at import, as torch
inductor picks them), all CUDA groups in one more, the Triton groups' Python pasted in; then
`class ModelNew(Model)` (same parameters, created in the same order). Its forward runs the
graph's fx statements for the ops left to torch and `out = _stark_ext.gN_...(...)` per
fused group, each group placed where all its inputs exist and before any reader of its
outputs. `// --- group gN: ... ---` / `// --- end gN ---` in the C++ and a `# gN: ...`
line in forward mark each group for the planner's anchors and the debug step.
"""

from __future__ import annotations

import ast

from engine.agents.kernels.cpp_prelude import cpp_prelude
from engine.agents.kernels.ir import CapturedGraph, FusionGroup, GeneratedGroup
from engine.agents.render import strip_reference
from engine.agents.transforms import make_header
from engine.artifacts.generated_code import generated_languages

__all__ = ["generated_languages", "render_kernel_module"]

INDENT = " " * 8

# The module's own code for the C++ build: flags from torch's view of this CPU.
CPU_FLAGS_CODE = '''
def _stark_cpu_flags() -> list[str]:
    """Compiler flags for this machine, as torch inductor's cpp backend chooses them.

    CPU_CAPABILITY_* selects ATen's Vectorized<float> for the ISA (SLEEF's vector exp,
    tanh, erf, log) and -m... lets the compiler emit it; any other capability builds
    ATen's portable vector code. -fopenmp is what makes at::parallel_for run on ATen's
    OpenMP threads (this torch is built with OpenMP; without the flag the header runs the
    loop on one thread), and linking nothing more keeps torch's own libgomp the only one.
    No -ffast-math: it would change results; -fno-math-errno only skips errno.
    """
    capability = torch.backends.cpu.get_cpu_capability()
    flags = ["-O3", "-fopenmp", "-fno-math-errno"]
    if capability.startswith("AVX512"):
        flags += ["-mavx512f", "-mavx512dq", "-mavx512vl", "-mavx512bw", "-mfma"]
        flags += ["-DCPU_CAPABILITY_AVX512", "-DCPU_CAPABILITY=AVX512"]
    elif capability == "AVX2":
        flags += ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"]
    return flags
'''


def render_kernel_module(
    reference_src: str,
    graph: CapturedGraph,
    generated: list[GeneratedGroup],
    groups: list[FusionGroup],
    *,
    title: str,
    meta: dict,
) -> str:
    """The complete candidate file (see the module docstring). fx's statements may use
    `operator` and `builtins` besides torch (the capture's `imports` hold anything else)."""
    by_id = {g.id: g for g in groups}
    missing = [g.group_id for g in generated if g.group_id not in by_id]
    if missing:
        raise ValueError(f"generated code for groups {missing} that are not in `groups`")
    owners: dict[str, str] = {}
    for code in generated:
        for node in by_id[code.group_id].nodes:
            if node in owners:
                raise ValueError(f"groups {owners[node]} and {code.group_id} both compute {node}")
            owners[node] = code.group_id
    futures, body = strip_reference(reference_src)
    out: list[str] = [make_header(meta), f"# {' '.join(title.split())}", *futures]
    out += ["import builtins", "import operator", "", "import torch", "", body, "", ""]
    kernels = _kernel_section(graph, generated)
    if kernels:
        out += kernels
    out += _model_new(graph, generated, by_id)
    return "\n".join(out) + "\n"


def _kernel_section(graph: CapturedGraph, generated: list[GeneratedGroup]) -> list[str]:
    cpp = [g for g in generated if g.backend == "cpp"]
    cuda = [g for g in generated if g.backend == "cuda"]
    triton = [g for g in generated if g.backend == "triton"]
    if cpp and cuda:
        raise ValueError("a module binds one extension as _stark_ext: C++ and CUDA groups both")
    lines = ["# " + "-" * 76, "# Generated kernels", "# " + "-" * 76]
    imports = ["import hashlib"] if cpp or cuda else []
    if cpp or cuda:
        imports.append("from torch.utils.cpp_extension import load_inline")
    if triton:
        imports += ["import triton", "import triton.language as tl"]
    imports += list(graph.imports)
    lines += list(dict.fromkeys(imports))
    if cpp:
        lines += _cpp_build(cpp)
    if cuda:
        lines += _cuda_build(cuda)
    for group in triton:
        lines += ["", "", group.python_source.strip("\n")]
    return lines + ["", ""] if (cpp or cuda or triton or graph.imports) else []


def _raw(name: str, text: str) -> list[str]:
    if '"""' in text:
        raise ValueError(f"{name} contains a triple quote, which the module cannot hold")
    return [f'{name} = r"""', text.rstrip("\n"), '"""']


def _cpp_build(groups: list[GeneratedGroup]) -> list[str]:
    source = cpp_prelude() + "\n" + "\n".join(g.cpp_source for g in groups)
    functions = [f for g in groups for f in g.functions]
    return [
        "",
        *CPU_FLAGS_CODE.rstrip("\n").split("\n"),
        "",
        "",
        *_raw("_STARK_CPP_SOURCE", source),
        "_STARK_CPP_FLAGS = _stark_cpu_flags()",
        "_stark_ext = load_inline(",
        '    name="stark_"',
        '    + hashlib.sha256((_STARK_CPP_SOURCE + " ".join(_STARK_CPP_FLAGS)).encode()).hexdigest()[:12],',
        "    cpp_sources=[_STARK_CPP_SOURCE],",
        f"    functions={functions!r},",
        "    extra_cflags=_STARK_CPP_FLAGS,",
        "    no_implicit_headers=True,  # the source includes the few headers it needs",
        "    with_pytorch_error_handling=False,",
        "    verbose=False,",
        ")",
    ]


def _cuda_build(groups: list[GeneratedGroup]) -> list[str]:
    functions = [f for g in groups for f in g.functions]
    declarations = "\n".join(g.cpp_source for g in groups)
    definitions = "\n".join(g.cuda_source for g in groups)
    return [
        "",
        *_raw("_STARK_CUDA_DECLARATIONS", declarations),
        *_raw("_STARK_CUDA_SOURCE", definitions),
        "_stark_ext = load_inline(",
        '    name="stark_"',
        "    + hashlib.sha256((_STARK_CUDA_DECLARATIONS + _STARK_CUDA_SOURCE).encode()).hexdigest()[:12],",
        "    cpp_sources=[_STARK_CUDA_DECLARATIONS],",
        "    cuda_sources=[_STARK_CUDA_SOURCE],",
        f"    functions={functions!r},",
        '    extra_cuda_cflags=["-O3"],',
        "    verbose=False,",
        ")",
    ]


def _model_new(
    graph: CapturedGraph, generated: list[GeneratedGroup], by_id: dict[str, FusionGroup]
) -> list[str]:
    signature = ", ".join(["self", *graph.inputs])
    lines = [
        "class ModelNew(Model):",
        f"    def forward({signature}):",
    ]
    for unit in replay_order(graph, [(by_id[g.group_id], g) for g in generated]):
        if isinstance(unit, tuple):
            group, code = unit
            targets = ", ".join(code.outputs)
            lines.append(f"{INDENT}# {group.id}: {group.summary or ', '.join(group.nodes)}")
            lines.append(f"{INDENT}{targets} = {code.call}")
        else:
            lines += [INDENT + text for text in unit.splitlines() if text.strip()]
    lines += [INDENT + text for text in graph.output_code.splitlines() if text.strip()]
    return lines


def replay_order(
    graph: CapturedGraph, fused: list[tuple[FusionGroup, GeneratedGroup]]
) -> list[str | tuple[FusionGroup, GeneratedGroup]]:
    """forward()'s statements: fx code lines for unfused nodes, one unit per fused group,
    each emitted once all it reads exists, the graph's order kept otherwise."""
    owner = {n: entry for entry in fused for n in entry[0].nodes}
    available = set(graph.inputs)
    units: list[tuple[set[str], set[str], str | tuple[FusionGroup, GeneratedGroup]]] = []
    seen_groups: set[str] = set()
    names = {n.name for n in graph.nodes}
    for node in graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        entry = owner.get(node.name)
        if entry is None:
            reads = {a.node for a in node.args if a.node is not None} | _names_in(node.code)
            units.append((reads & names, {node.name}, node.code))
        elif entry[0].id not in seen_groups:
            seen_groups.add(entry[0].id)
            members = set(entry[0].nodes)
            reads = {
                a.node
                for n in entry[0].nodes
                for a in graph.node(n).args
                if a.node is not None and a.node not in members
            } | set(entry[0].inputs)
            units.append((reads & names, set(entry[1].outputs), entry))
    order: list[str | tuple[FusionGroup, GeneratedGroup]] = []
    pending = list(units)
    while pending:
        ready = next((u for u in pending if u[0] <= available), None)
        if ready is None:
            stuck = [u[2] if isinstance(u[2], str) else u[2][0].id for u in pending]
            raise ValueError(f"no valid order for forward: {stuck[:3]} wait on each other")
        pending.remove(ready)
        available |= ready[1]
        order.append(ready[2])
    hidden = [name for name in graph.outputs if name not in available]
    if hidden:
        raise ValueError(f"the return reads {hidden}, which a fused group keeps inside")
    return order


def _names_in(code: str) -> set[str]:
    """The names an fx statement reads (its dependencies beyond `GraphNode.args`)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
