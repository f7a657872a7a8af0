"""The candidate file `render_kernel_module` writes: header, reference, one extension per
backend, and a ModelNew whose forward replays the graph with each fused group as one call
placed in a valid order. One C++ build (a graph with unfused ops between its groups)."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from engine.agents.kernels.cpp_codegen import generate_cpp
from engine.agents.kernels.cuda_codegen import generate_cuda
from engine.agents.kernels.ir import Arg, CapturedGraph, GraphNode, TensorMeta
from engine.agents.kernels.module import CPU_FLAGS_CODE, generated_languages, render_kernel_module
from engine.agents.kernels.triton_codegen import generate_triton
from engine.agents.transforms import make_header, read_header
from engine.bench.loader import import_from_path
from tests.agents.kernels.conftest import GraphBuilder

META = {"transforms": [], "kernel": {"backend": "cpp", "fused": ["g0", "g1"]}}


def _interleaved() -> tuple[GraphBuilder, CapturedGraph, list[str]]:
    """Groups whose nodes are not adjacent in graph order, with torch ops between them:
    g0 = {p, q} where q reads `cs`, an unfused cumsum that comes after p; g1 = softmax of a
    view (data movement, unfused) of q; outputs include a group's intermediate."""
    b = GraphBuilder()
    x = b.input("x", (6, 40))
    z = b.input("z", (6, 40))
    p = b.op("mul", x, 2.0, name="p")
    cs = "cs"
    b.nodes.append(
        GraphNode(
            cs,
            "call_function",
            "other",
            "other",
            (Arg(node=z),),
            {},
            TensorMeta((6, 40), "float32"),
            "cs = torch.cumsum(z, 0)",
        )
    )
    q = b.op("add", p, cs, name="q")
    b.nodes.append(
        GraphNode(
            "v",
            "call_method",
            "view",
            "data_movement",
            (Arg(node=q),),
            {},
            TensorMeta((12, 20), "float32"),
            "v = q.view(12, 20)",
        )
    )
    s = b.op("softmax", "v", dim=1, name="s")
    after = b.op("relu", s, name="after")
    b.group("pointwise", [p, q], outputs=[p, q])
    b.group("reduction", [s], anchor=s)
    return b, b.graph([after, p]), [after, p]


def _load(code: str, tmp_path: Path):
    path = tmp_path / "candidate.py"
    path.write_text(code)
    return import_from_path(str(path), "candidate")


def _compare(module, builder: GraphBuilder) -> None:
    inputs = [torch.randn(s) for s in builder.input_shapes.values()]
    torch.manual_seed(0)
    model = module.Model()
    torch.manual_seed(0)
    model_new = module.ModelNew()
    with torch.no_grad():
        expected, got = model(*inputs), model_new(*inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = got if isinstance(got, tuple) else (got,)
    assert len(expected) == len(got)
    for e, g in zip(expected, got, strict=True):
        assert torch.allclose(g, e, atol=1e-4, rtol=1e-4)


def test_no_groups_is_the_plain_replay(tmp_path: Path) -> None:
    builder, graph, outputs = _interleaved()
    code = render_kernel_module(
        builder.reference(outputs), graph, [], [], title="no kernel", meta=META
    )
    assert code.splitlines()[0] == make_header(META) and read_header(code) == META
    assert code.splitlines()[1] == "# no kernel"
    assert "def get_inputs" not in code and "load_inline" not in code
    assert generated_languages(code) == []
    _compare(_load(code, tmp_path), builder)


@pytest.fixture(scope="module")
def interleaved_module(torch_extensions_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    builder, graph, outputs = _interleaved()
    generated = [generate_cpp(graph, g, {}) for g in builder.groups]
    code = render_kernel_module(
        builder.reference(outputs), graph, generated, builder.groups, title="Plan: fuse", meta=META
    )
    return builder, code, _load(code, tmp_path_factory.mktemp("interleaved"))


def test_fused_groups_match_the_reference(interleaved_module) -> None:
    builder, _, module = interleaved_module
    _compare(module, builder)


def test_forward_places_each_group_once_in_a_valid_order(interleaved_module) -> None:
    _, code, _ = interleaved_module
    forward = code[code.index("class ModelNew(Model):") :].splitlines()
    assert forward[1] == "    def forward(self, x, z):"
    body = [line.strip() for line in forward[2:]]
    assert body == [
        "cs = torch.cumsum(z, 0)",
        "# g0: mul -> add",
        "p, q = _stark_ext.g0_mul_add(x, cs)",
        "v = q.view(12, 20)",
        "# g1: softmax",
        "s = _stark_ext.g1_softmax(v)",
        "after = torch.relu(s)",
        "return (after, p,)",
    ]


def test_one_extension_holds_every_cpp_group(interleaved_module) -> None:
    _, code, module = interleaved_module
    tree = ast.parse(code)
    calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "load_inline"
    ]
    assert len(calls) == 1
    keywords = {k.arg: k.value for k in calls[0].keywords}
    assert ast.literal_eval(keywords["functions"]) == ["g0_mul_add", "g1_softmax"]
    assert ast.literal_eval(keywords["no_implicit_headers"]) is True
    assert ast.unparse(keywords["extra_cflags"]) == "_STARK_CPP_FLAGS"
    assert module._stark_ext.__name__.startswith("stark_")
    assert generated_languages(code) == ["cpp"]
    for group in ("g0", "g1"):  # the anchors the planner and the debug step read
        assert code.count(f"// --- group {group}:") == 1
        assert code.count(f"// --- end {group} ---") == 1


def test_rendering_is_deterministic() -> None:
    builder, graph, outputs = _interleaved()
    generated = [generate_cpp(graph, g, {}) for g in builder.groups]
    args = (builder.reference(outputs), graph, generated, builder.groups)
    first = render_kernel_module(*args, title="a", meta=META)
    assert first == render_kernel_module(*args, title="a", meta=META)


def test_cpu_flags_follow_torch_capability(monkeypatch: pytest.MonkeyPatch) -> None:
    namespace: dict = {"torch": torch}
    exec(CPU_FLAGS_CODE, namespace)
    flags = namespace["_stark_cpu_flags"]
    for capability, expected in (
        (
            "AVX512",
            ["-mavx512f", "-mavx512dq", "-mavx512vl", "-mavx512bw", "-DCPU_CAPABILITY=AVX512"],
        ),
        ("AVX2", ["-mavx2", "-mfma", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"]),
        ("DEFAULT", []),
    ):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        got = flags()
        assert got[:3] == ["-O3", "-fopenmp", "-fno-math-errno"] and "-ffast-math" not in got
        assert all(flag in got for flag in expected), (capability, got)
        if capability == "DEFAULT":
            assert not any(f.startswith("-m") or "CAPABILITY" in f for f in got)


def test_overlapping_or_unordered_groups_are_errors() -> None:
    builder, graph, outputs = _interleaved()
    reference = builder.reference(outputs)
    g0 = builder.groups[0]
    both = dataclasses.replace(g0, id="g1")
    generated = [
        generate_cpp(graph, g0, {}),
        dataclasses.replace(generate_cpp(graph, g0, {}), group_id="g1"),
    ]
    with pytest.raises(ValueError, match="groups g0 and g1 both compute p"):
        render_kernel_module(reference, graph, generated, [g0, both], title="t", meta=META)
    # a group that keeps p inside, though the return reads it
    hidden = dataclasses.replace(g0, outputs=("q",))
    code = generate_cpp(graph, hidden, {})
    with pytest.raises(ValueError, match=r"the return reads \['p'\]"):
        render_kernel_module(reference, graph, [code], [hidden], title="t", meta=META)
    # a group that needs its own reader's value: q waits on v, v on q
    loop = dataclasses.replace(g0, nodes=("p", "q", "s"), outputs=("q", "s"))
    stuck = dataclasses.replace(code, outputs=("q", "s"))
    with pytest.raises(ValueError, match="no valid order for forward"):
        render_kernel_module(reference, graph, [stuck], [loop], title="t", meta=META)


def test_gpu_backends_render_one_extension_or_their_python(tmp_path: Path) -> None:
    builder, graph, outputs = _interleaved()
    gpu_graph = dataclasses.replace(graph, device="cuda")
    reference = builder.reference(outputs)
    cuda = [generate_cuda(gpu_graph, g, {}) for g in builder.groups]
    code = render_kernel_module(reference, gpu_graph, cuda, builder.groups, title="t", meta=META)
    ast.parse(code)
    assert generated_languages(code) == ["cuda"] and code.count("load_inline(") == 1
    assert "cuda_sources=[_STARK_CUDA_SOURCE]" in code
    triton = [generate_triton(gpu_graph, g, {}) for g in builder.groups]
    code = render_kernel_module(reference, gpu_graph, triton, builder.groups, title="t", meta=META)
    ast.parse(code)
    assert generated_languages(code) == ["triton"] and "load_inline" not in code
    assert "import triton.language as tl" in code
    with pytest.raises(ValueError, match="C\\+\\+ and CUDA groups both"):
        render_kernel_module(
            reference,
            gpu_graph,
            [cuda[0], generate_cpp(graph, builder.groups[1], {})],
            builder.groups,
            title="t",
            meta=META,
        )
    assert json.loads(code.splitlines()[0].split(": ", 1)[1]) == META
