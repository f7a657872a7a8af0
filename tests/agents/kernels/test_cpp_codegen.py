"""The C++ code generator on hand-made graphs (independent of the capture).

One extension holds every group below (one build for the file): pointwise chains with
broadcast operands and awkward sizes, epilogues on linear/bmm/conv2d, and reductions along
rows (inner == 1) and across inner positions (inner > 1), under each vector mode, loop
order and accumulation. The rendered module is imported from its file as the benchmarker
imports candidates, and ModelNew is compared with the eager Model on random inputs.
"""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from engine.agents.kernels.cpp_codegen import generate_cpp, supports_cpp
from engine.agents.kernels.ir import Arg, CapturedGraph, FusionGroup, GraphNode, TensorMeta
from engine.agents.kernels.module import render_kernel_module
from engine.bench.loader import import_from_path
from tests.agents.kernels.conftest import GraphBuilder

TOL = {"atol": 1e-4, "rtol": 1e-4}


@dataclass
class Case:
    name: str
    group: FusionGroup
    schedule: dict[str, Any]
    outputs: list[str]


def _swish(b: GraphBuilder, x: str, bias: str) -> list[str]:
    s = b.op("sigmoid", x)
    m = b.op("mul", x, s)
    m2 = b.op("mul", m, 2.0)
    return [s, m, m2, b.op("add", m2, bias)]


def _zoo(b: GraphBuilder, x: str, y: str) -> list[str]:
    """Every unary and binary operator once (outputs), positive inputs where needed."""
    nodes = [
        b.op("relu", x),
        b.op("gelu", x, approximate="none"),
        b.op("gelu", x, approximate="tanh"),
        b.op("silu", x),
        b.op("mish", x),
        b.op("softsign", x),
        b.op("selu", x),
        b.op("hardsigmoid", x),
        b.op("hardswish", x),
        b.op("softplus", x, beta=2.0, threshold=5.0),
        b.op("elu", x, alpha=0.7),
        b.op("celu", x, alpha=1.3),
        b.op("leaky_relu", x, negative_slope=0.05),
        b.op("hardtanh", x, min_val=-0.5, max_val=0.8),
        b.op("clamp", x, min=-0.2, max=None),
        b.op("tanh", x),
        b.op("sigmoid", x),
        b.op("erf", x),
        b.op("sin", x),
        b.op("cos", x),
        b.op("neg", x),
        b.op("square", x),
        b.op("exp", x),
        b.op("pow", x, exponent=2),
        b.op("pow", x, exponent=3),
        b.op("maximum", x, y),
        b.op("minimum", x, y),
        b.op("sub", 2.0, x),
        b.op("identity", x),
    ]
    a = b.op("abs", x)
    positive = b.op("add", a, 0.5)
    nodes += [a, positive]
    for kind in ("log", "sqrt", "rsqrt", "log1p", "reciprocal"):
        nodes.append(b.op(kind, positive))
    nodes += [b.op("pow", positive, exponent=1.7), b.op("pow", positive, exponent=0.5)]
    nodes.append(b.op("div", y, positive))
    return nodes


def _rmsnorm_dim1(b: GraphBuilder, x: str) -> list[str]:
    p = b.op("pow", x, exponent=2)
    m = b.op("mean", p, dim=(1,), keepdim=True)
    e = b.op("add", m, 1e-5)
    s = b.op("sqrt", e)
    return [p, m, e, s, b.op("div", x, s)]


def build_cases(b: GraphBuilder) -> list[Case]:
    cases: list[Case] = []

    def add(
        name: str, kind: str, nodes: list[str], schedule: dict[str, Any], outputs=None, anchor=None
    ):
        group = b.group(kind, nodes, outputs, anchor)
        cases.append(Case(name, group, schedule, list(group.outputs)))

    bias = b.param("bias", (1031,))
    for mode in ("aten", "simd", "scalar"):
        add(
            f"swish_bias_{mode}",
            "pointwise",
            _swish(b, b.input(f"x_{mode}", (7, 1031)), bias),
            {"vector": mode},
        )
    flat = b.input("flat", (12345,))
    silu = b.op("silu", flat)
    half = b.op("mul", silu, 0.5)
    add(
        "flat_unroll2_chunks",
        "pointwise",
        [silu, half, b.op("sub", 1.0, half)],
        {"unroll": 2, "grain": 2048},
    )
    nchw = b.input("nchw", (4, 16, 9, 13))
    channel = b.param("channel_bias", (16, 1, 1))
    scale = b.param("scale", (1,))
    shifted = b.op("add", nchw, channel)
    gelu = b.op("gelu", shifted, approximate="tanh")
    add(
        "nchw_channel_bias",
        "pointwise",
        [shifted, gelu, b.op("mul", gelu, scale)],
        {"unroll": 4, "grain": 2048},
    )
    for mode in ("aten", "simd"):
        nodes = _zoo(b, b.input(f"zoo_{mode}", (3, 37)), b.input(f"zoo_y_{mode}", (3, 37)))
        add(f"op_zoo_{mode}", "pointwise", nodes, {"vector": mode}, outputs=nodes)

    x = b.input("gemm_x", (33, 65))
    gemm = b.module("gemm", "nn.Linear(65, 127)", "linear", "matmul", x, (33, 127))
    y = b.param("gemm_shift", (127,))
    added = b.op("add", gemm, y)
    add("linear_add_relu", "epilogue", [gemm, added, b.op("relu", added)], {}, anchor=gemm)
    a = b.input("bmm_a", (3, 17, 9))
    weight = b.param("bmm_b", (3, 9, 11))
    bmm = b.call("bmm", "matmul", (a, weight), (3, 17, 11))
    half = b.op("mul", bmm, 0.5)
    tanh = b.op("tanh", half)
    add(
        "bmm_scale_keeps_anchor",
        "epilogue",
        [bmm, half, tanh],
        {"vector": "scalar"},
        outputs=[bmm, tanh],
        anchor=bmm,
    )
    image = b.input("image", (2, 3, 12, 10))
    conv = b.module(
        "conv",
        "nn.Conv2d(3, 4, 3, padding=1)",
        "conv2d",
        "conv",
        image,
        (2, 4, 12, 10),
        stride=[1, 1],
        padding=[1, 1],
        dilation=[1, 1],
        groups=1,
    )
    conv_bias = b.param("conv_bias", (4, 1, 1))
    shifted = b.op("add", conv, conv_bias)
    add(
        "conv_bias_relu",
        "epilogue",
        [conv, shifted, b.op("relu", shifted)],
        {"vector": "simd"},
        anchor=conv,
    )

    bias_in = b.param("addmm_bias", (19,))
    mat1 = b.input("mat1", (23, 31))
    mat2 = b.param("mat2", (31, 19))
    addmm = b.call("addmm", "matmul", (bias_in, mat1, mat2), (23, 19), beta=0.5, alpha=2.0)
    add("addmm_relu", "epilogue", [addmm, b.op("relu", addmm)], {"unroll": 2}, anchor=addmm)
    batch = b.input("batch", (2, 5, 14))
    proj = b.param("proj", (14, 6))
    matmul = b.call("matmul", "matmul", (batch, proj), (2, 5, 6))
    add(
        "matmul_gelu",
        "epilogue",
        [matmul, b.op("gelu", matmul, approximate="none")],
        {},
        anchor=matmul,
    )
    up = b.module(
        "up",
        "nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)",
        "conv_transpose2d",
        "conv",
        b.input("small", (2, 4, 5, 6)),
        (2, 2, 10, 12),
        stride=[2, 2],
        padding=[1, 1],
        output_padding=[1, 1],
        dilation=[1, 1],
        groups=1,
    )
    add("conv_transpose_sigmoid", "epilogue", [up, b.op("sigmoid", up)], {}, anchor=up)
    signal = b.input("signal", (3, 4, 29))
    taps, taps_bias = b.param("taps", (6, 4, 5)), b.param("taps_bias", (6,))
    conv1d = b.call(
        "conv1d",
        "conv",
        (signal, taps, taps_bias),
        (3, 6, 29),
        stride=[1],
        padding="same",
        dilation=[1],
        groups=1,
    )
    add(
        "conv1d_same_silu",
        "epilogue",
        [conv1d, b.op("silu", conv1d)],
        {"vector": "scalar"},
        anchor=conv1d,
    )
    for mode in ("aten", "simd", "scalar"):
        softmax = b.op("softmax", b.input(f"rows_{mode}", (5, 1003)), dim=1)
        add(f"softmax_rows_{mode}", "reduction", [softmax], {"vector": mode}, anchor=softmax)
    tall = b.input("tall", (37, 19))
    lsm = b.op("log_softmax", tall, dim=0)
    add("log_softmax_dim0_columns", "reduction", [lsm], {"unroll": 2}, anchor=lsm)
    for name, schedule in (
        ("rmsnorm_dim1_columns", {}),
        ("rmsnorm_dim1_reduced_order", {"loop_order": "reduced"}),
        ("rmsnorm_dim1_scalar_tiles", {"vector": "scalar"}),
        ("rmsnorm_dim1_simd_kahan", {"vector": "simd", "accumulate": "kahan"}),
    ):
        nodes = _rmsnorm_dim1(b, b.input(f"x_{name}", (4, 13, 9, 11)))
        add(name, "reduction", nodes, schedule, anchor=nodes[1])
    seq = b.input("seq", (6, 10, 17))
    ln = b.module(
        "ln",
        "nn.LayerNorm((10, 17))",
        "layer_norm",
        "reduction",
        seq,
        (6, 10, 17),
        normalized_shape=[10, 17],
        eps=1e-5,
    )
    doubled = b.op("mul", ln, 2.0)
    add(
        "layer_norm_module_relu",
        "reduction",
        [ln, doubled, b.op("relu", doubled)],
        {"unroll": 2},
        anchor=ln,
    )
    cube = b.input("cube", (3, 4, 50))
    lse = b.op("logsumexp", cube, dim=(2,), keepdim=False)
    add("logsumexp_then_scale", "reduction", [lse, b.op("mul", lse, 2.0)], {}, anchor=lse)
    boxes = b.input("boxes", (4, 6, 7, 3))
    var = b.op("var", boxes, dim=(1, 2), correction=1, keepdim=True)
    centred = b.op("sub", boxes, var)
    add(
        "var_then_centre_columns",
        "reduction",
        [var, centred],
        {},
        outputs=[var, centred],
        anchor=var,
    )
    for accumulate in ("float", "double", "kahan"):
        long = b.input(f"long_{accumulate}", (8, 5003))
        shifted = b.op("add", long, 3.0)
        total = b.op("sum", shifted, dim=(1,), keepdim=False)
        add(
            f"sum_{accumulate}",
            "reduction",
            [shifted, total],
            {"accumulate": accumulate},
            anchor=total,
        )
    wide = b.input("wide", (9, 257))
    for kind, dim, keepdim, mode in (
        ("amax", (1,), True, "aten"),
        ("amin", (0,), False, "scalar"),
        ("norm", (1,), False, "simd"),
    ):
        node = b.op(kind, wide, dim=dim, keepdim=keepdim)
        add(f"{kind}_{mode}", "reduction", [node], {"vector": mode}, anchor=node)
    feats = b.input("feats", (12, 301))
    twice = b.op("mul", feats, 2.0)
    mean = b.op("mean", twice, dim=(1,), keepdim=True)
    centred = b.op("sub", twice, mean)
    add(
        "mean_centre_rows",
        "reduction",
        [twice, mean, centred],
        {},
        outputs=[twice, centred],
        anchor=mean,
    )
    counts = b.input("counts", (12, 33))
    offsets = b.param("offsets", (12, 1))
    total = b.op("sum", counts, dim=(1,), keepdim=True)
    shifted = b.op("add", total, offsets)
    add("sum_plus_offsets_grain1", "reduction", [total, shifted], {"grain": 1}, anchor=total)
    grid = b.input("grid", (5, 7, 37))
    peak = b.op("amax", grid, dim=(1,), keepdim=True)
    add(
        "amax_columns_grain1",
        "reduction",
        [peak, b.op("sub", grid, peak)],
        {"grain": 1},
        anchor=peak,
    )
    plane = b.input("plane", (17, 19))
    magnitude = b.op("abs", plane)
    everything = b.op("mean", magnitude, dim=(0, 1), keepdim=False)
    add("mean_of_everything_0d", "reduction", [magnitude, everything], {}, anchor=everything)
    hidden = b.input("hidden", (10, 64))
    rms_weight = b.param("rms_weight", (64,))
    rms = b.op("rms_norm", hidden, rms_weight, normalized_shape=[64], eps=1e-6)
    add("rms_norm_weight_double", "reduction", [rms], {"accumulate": "double"}, anchor=rms)
    big = b.input("big", (4, 1 << 20))
    add("swish_4m", "pointwise", _swish(b, big, 1.5), {})
    return cases


def _inputs(builder: GraphBuilder) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return {
        name: torch.randn(shape, generator=generator) * 1.5
        for name, shape in builder.input_shapes.items()
    }


@dataclass
class Built:
    cases: dict[str, Case]
    graph: CapturedGraph
    module: ModuleType
    code: str
    expected: dict[str, torch.Tensor]
    got: dict[str, torch.Tensor]
    inputs: dict[str, torch.Tensor]


@pytest.fixture(scope="module")
def built(torch_extensions_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Built:
    builder = GraphBuilder()
    cases = build_cases(builder)
    outputs = list(dict.fromkeys(o for c in cases for o in c.outputs))
    graph = builder.graph(outputs)
    reference = builder.reference(outputs)
    generated = [generate_cpp(graph, c.group, c.schedule) for c in cases]
    code = render_kernel_module(
        reference, graph, generated, [c.group for c in cases], title="test", meta={"test": True}
    )
    path = tmp_path_factory.mktemp("candidate") / "candidate.py"
    path.write_text(code)
    module = import_from_path(str(path), "candidate")
    inputs = _inputs(builder)
    torch.manual_seed(0)
    model = module.Model()
    torch.manual_seed(0)
    model_new = module.ModelNew()
    with torch.no_grad():
        expected = model(*inputs.values())
        got = model_new(*inputs.values())
    return Built(
        {c.name: c for c in cases},
        graph,
        module,
        code,
        dict(zip(outputs, expected, strict=True)),
        dict(zip(outputs, got, strict=True)),
        inputs,
    )


CASE_NAMES = [c.name for c in build_cases(GraphBuilder())]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_group_matches_torch(built: Built, name: str) -> None:
    for output in built.cases[name].outputs:
        got, expected = built.got[output], built.expected[output]
        assert got.shape == expected.shape, output
        assert torch.allclose(got, expected, equal_nan=True, **TOL), (
            f"{name}/{output}: max abs error {(got - expected).abs().nan_to_num().max().item():.3g}"
        )


def test_every_output_is_a_new_tensor(built: Built) -> None:
    """No output aliases an input (the benchmarker fails kernels whose outputs do)."""
    pointers = {t.data_ptr() for t in built.inputs.values()}
    assert all(t.data_ptr() not in pointers for t in built.got.values())


def _function(built: Built, case: str) -> Any:
    name = next(n for n in generate_cpp(built.graph, built.cases[case].group, {}).functions)
    return getattr(built.module._stark_ext, name)


def test_wrong_dtype_and_shape_are_clear_errors(built: Built) -> None:
    fn = _function(built, "softmax_rows_aten")
    with pytest.raises(RuntimeError, match=r"g\d+_softmax: rows_aten must be float32, got Double"):
        fn(torch.randn(5, 1003, dtype=torch.float64))
    with pytest.raises(
        RuntimeError, match=r"rows_aten must have the captured shape \[5, 1003\], got \[5, 1002\]"
    ):
        fn(torch.randn(5, 1002))


def test_non_contiguous_inputs_are_read_correctly(built: Built) -> None:
    fn = _function(built, "softmax_rows_aten")
    x = torch.randn(1003, 5).t()
    assert torch.allclose(fn(x), torch.softmax(x, dim=1), **TOL)


def _median_iqr_ms(fn: Any, repeats: int = 15) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    q = statistics.quantiles(times, n=4)
    return statistics.median(times), q[2] - q[0]


def test_swish_4m_benchmark_report(built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    """Not a timed assert: prints the fused kernel's median (IQR) against eager's, and the
    fused kernel with 1 thread against torch's thread count (at::parallel_for's pool)."""
    x = built.inputs["big"]
    fused = _function(built, "swish_4m")
    with torch.no_grad():
        eager = _median_iqr_ms(lambda: x * torch.sigmoid(x) * 2.0 + 1.5)
        kernel = _median_iqr_ms(lambda: fused(x))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            single = _median_iqr_ms(lambda: fused(x))
        finally:
            torch.set_num_threads(threads)
    with capsys.disabled():
        print(
            f"\n[swish 4M] eager {eager[0]:.2f} ms (IQR {eager[1]:.2f}), fused {kernel[0]:.2f} ms "
            f"(IQR {kernel[1]:.2f}) with {threads} threads, {single[0]:.2f} ms (IQR "
            f"{single[1]:.2f}) with 1 thread"
        )
    assert torch.allclose(fused(x), x * torch.sigmoid(x) * 2.0 + 1.5, **TOL)


# --- the C++ text, without building ---------------------------------------------------------


def _swish_graph() -> tuple[CapturedGraph, FusionGroup]:
    b = GraphBuilder()
    x = b.input("x", (128, 4096))
    nodes = _swish(b, x, b.param("bias", (4096,)))
    return b.graph([nodes[-1]]), b.group("pointwise", nodes)


def test_generated_cpp_reads_like_hand_written_code() -> None:
    graph, group = _swish_graph()
    code = generate_cpp(graph, group, {})
    source = code.cpp_source
    assert code.functions == ("g0_sigmoid_mul_mul_add",)
    assert code.call == "_stark_ext.g0_sigmoid_mul_mul_add(x, bias)"
    lines = source.splitlines()
    assert lines[0] == "// --- group g0: sigmoid -> mul -> mul -> add ---"
    assert lines[-1] == "// --- end g0 ---"
    assert "// Fuses sigmoid, mul, mul_1 (mul), add." in lines
    assert "// schedule: vector=aten grain=32768 unroll=1" in lines
    assert (
        "at::Tensor g0_sigmoid_mul_mul_add(const at::Tensor& x_in, const at::Tensor& bias_in) {"
        in lines
    )
    assert 'stark::check_input(x_in, "g0_sigmoid_mul_mul_add", "x", {128, 4096});' in source
    assert "const Vec sigmoid = stark::sigmoid(x);" in source
    assert "at::parallel_for(" in source
    for line in lines:
        indent = len(line) - len(line.lstrip(" "))
        assert "\t" not in line and indent % 2 == 0 and len(line) <= 110, line


def test_each_vector_mode_writes_its_own_loops() -> None:
    graph, group = _swish_graph()
    aten = generate_cpp(graph, group, {"vector": "aten", "unroll": 2}).cpp_source
    simd = generate_cpp(graph, group, {"vector": "simd", "unroll": 2}).cpp_source
    scalar = generate_cpp(graph, group, {"vector": "scalar", "unroll": 4}).cpp_source
    assert "Vec::loadu(x_run + k)" in aten and "#pragma GCC unroll 2" in aten
    assert "Vec::loadu(x_run + j, n)" in aten  # the masked tail
    assert "#pragma omp simd simdlen(2 * Vec::size())" in simd and "Vec::loadu" not in simd
    assert "#pragma GCC unroll 4" in scalar and "omp simd" not in scalar
    assert "const float sigmoid = stark::sigmoid(x);" in scalar


def test_reduction_schedules_change_the_loops() -> None:
    b = GraphBuilder()
    nodes = _rmsnorm_dim1(b, b.input("x", (4, 13, 9, 11)))
    graph, group = b.graph([nodes[-1]]), b.group("reduction", nodes, anchor=nodes[1])
    columns = generate_cpp(graph, group, {}).cpp_source
    reduced = generate_cpp(graph, group, {"loop_order": "reduced"}).cpp_source
    kahan = generate_cpp(graph, group, {"vector": "simd", "accumulate": "kahan"}).cpp_source
    double = generate_cpp(graph, group, {"accumulate": "double"}).cpp_source
    assert "kOuter = 4, kReduced = 13, kInner = 99" in columns
    assert "stark::Sum<Vec> mean_sum_acc;" in columns and "for (int64_t tile = begin" in columns
    assert "for (int64_t row = begin" in reduced and "stark::Sum<float>" not in reduced
    assert "stark::KahanSum<float> mean_sum_acc[kTile];" in kahan
    assert "stark::DoubleSum<Vec>" in double


def _node(
    name: str,
    kind: str,
    op_class: str,
    args: tuple[str, ...],
    shape: tuple[int, ...],
    dtype: str = "float32",
    **params: Any,
) -> GraphNode:
    return GraphNode(
        name,
        "call_function",
        kind,
        op_class,
        tuple(Arg(node=a) for a in args),
        params,
        TensorMeta(shape, dtype),
    )


def _one_node_graph(
    node: GraphNode, kind: str, x_dtype: str = "float32", device: str = "cpu"
) -> tuple[CapturedGraph, FusionGroup]:
    x = GraphNode("x", "placeholder", "input", "input", meta=TensorMeta((4, 6, 8), x_dtype))
    graph = CapturedGraph((x, node), ("x",), f"return {node.name}", (node.name,), device=device)
    anchor = node.name if kind != "pointwise" else None
    return graph, FusionGroup("g0", kind, (node.name,), ("x",), (node.name,), anchor)


@pytest.mark.parametrize(
    ("node", "kind", "x_dtype", "device", "reason"),
    [
        (
            _node("cumsum", "cumsum", "other", ("x",), (4, 6, 8)),
            "pointwise",
            "float32",
            "cpu",
            "op 'cumsum' (cumsum) has no C++ template",
        ),
        (
            _node("gn", "group_norm", "reduction", ("x",), (4, 6, 8), num_groups=2, eps=1e-5),
            "reduction",
            "float32",
            "cpu",
            "reduction 'group_norm' (gn) has no C++ template",
        ),
        (
            _node("am", "argmax", "reduction", ("x",), (4, 8), dim=(1,), keepdim=False),
            "reduction",
            "float32",
            "cpu",
            "reduction 'argmax'",
        ),
        (
            _node(
                "bn",
                "batch_norm",
                "reduction",
                ("x",),
                (4, 6, 8),
                eps=1e-5,
                momentum=0.1,
                training=True,
            ),
            "reduction",
            "float32",
            "cpu",
            "reduction 'batch_norm'",
        ),
        (
            _node("s", "sum", "reduction", ("x",), (6,), dim=(0, 2), keepdim=False),
            "reduction",
            "float32",
            "cpu",
            "reduces dims [0, 2], not consecutive ones",
        ),
        (
            _node("nrm", "norm", "reduction", ("x",), (4, 6), dim=(2,), keepdim=False, p=1),
            "reduction",
            "float32",
            "cpu",
            "only p=2",
        ),
        (
            _node("r", "relu", "pointwise", ("x",), (4, 6, 8), "float64"),
            "pointwise",
            "float64",
            "cpu",
            "the C++ kernels take float32 only",
        ),
        (
            _node("r", "relu", "pointwise", ("x",), (4, 6, 8)),
            "pointwise",
            "float32",
            "cuda",
            "the C++ kernels run on the CPU",
        ),
        (
            _node("r", "relu", "pointwise", ("x",), (4, 6, 8)),
            "epilogue",
            "float32",
            "cpu",
            "no matmul/conv anchor",
        ),
    ],
    ids=[
        "cumsum",
        "group_norm",
        "argmax",
        "batch_norm",
        "dims",
        "norm_p1",
        "float64",
        "cuda",
        "anchorless",
    ],
)
def test_supports_cpp_gives_the_reason(
    node: GraphNode, kind: str, x_dtype: str, device: str, reason: str
) -> None:
    graph, group = _one_node_graph(node, kind, x_dtype, device)
    why = supports_cpp(graph, group)
    assert why is not None and reason in why, why
    with pytest.raises(ValueError, match=re.escape(reason)):
        generate_cpp(graph, group, {})


def test_supported_groups_have_no_reason() -> None:
    b = GraphBuilder()
    cases = build_cases(b)
    graph = b.graph([o for c in cases for o in c.outputs])
    assert {c.name: supports_cpp(graph, c.group) for c in cases} == {c.name: None for c in cases}


def test_unknown_schedule_keys_are_rejected() -> None:
    graph, group = _swish_graph()
    with pytest.raises(ValueError, match="unknown cpp schedule key 'threads'"):
        generate_cpp(graph, group, {"threads": 4})


def test_softmax_computes_each_exp_once() -> None:
    """exp(x - max) is stored per row in the sum pass and read back by the epilogue (ATen's
    own softmax does the same); computing it twice made the kernel 0.65x of eager."""
    for mode in ("aten", "simd"):
        b = GraphBuilder()
        softmax = b.op("softmax", b.input("x", (6, 1000)), dim=1)
        graph = b.graph([softmax])
        group = b.group("reduction", [softmax], anchor=softmax)
        source = generate_cpp(graph, group, {"vector": mode}).cpp_source
        # only in the sum pass: its vector loop and masked tail, or its one scalar loop
        assert source.count("stark::exp(") == (2 if mode == "aten" else 1), source
        assert "std::vector<float> cache_buffer(kReduced);" in source
        assert "cached * " in source
