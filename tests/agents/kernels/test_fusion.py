"""Fusion groups: the exact groups of each reference problem (captured once per session, shared
with test_capture through the capture's cache) and of hand-built graphs for the edge cases:
convexity, prologue pruning, a second source, an anchor read elsewhere, keepdim=False."""

from __future__ import annotations

import pytest

from engine.agents.kernels.capture import capture_reference
from engine.agents.kernels.fusion import disjoint, fusion_groups, op_class_counts
from engine.agents.kernels.ir import (
    Arg,
    CapturedGraph,
    FusionGroup,
    GraphNode,
    TensorMeta,
)
from tests.agents.kernels.refs import ref_source


def groups_of(name: str) -> list[tuple]:
    graph = capture_reference(ref_source(name), "cpu")
    assert isinstance(graph, CapturedGraph), graph
    return [as_tuple(g) for g in fusion_groups(graph)]


def as_tuple(g: FusionGroup) -> tuple:
    return (g.id, g.kind, g.nodes, g.inputs, g.outputs, g.anchor, g.summary)


EXPECTED = {
    "pointwise_swish": [
        (
            "g0",
            "pointwise",
            ("sigmoid", "mul", "mul_1", "add"),
            ("x", "bias"),
            ("add",),
            None,
            "sigmoid -> mul -> mul -> add",
        )
    ],
    "gelu_tanh": [
        (
            "g0",
            "pointwise",
            ("pow_1", "mul", "add", "mul_1", "mul_2", "tanh", "add_1", "mul_3"),
            ("x",),
            ("mul_3",),
            None,
            "pow -> mul -> add -> mul -> mul -> tanh -> add -> mul",
        )
    ],
    "softmax_rows": [("g0", "reduction", ("softmax",), ("x",), ("softmax",), "softmax", "softmax")],
    "layernorm": [("g0", "reduction", ("ln",), ("x",), ("ln",), "ln", "layer_norm")],
    "sum_dim1": [("g0", "reduction", ("sum_1",), ("x",), ("sum_1",), "sum_1", "sum")],
    "rmsnorm_dim1": [
        ("g0", "pointwise", ("pow_1",), ("x",), ("pow_1",), None, "pow"),
        (
            "g1",
            "reduction",
            ("pow_1", "mean", "add", "sqrt", "truediv"),
            ("x",),
            ("truediv",),
            "mean",
            "pow -> mean -> add -> sqrt -> div",
        ),
        ("g2", "reduction", ("pow_1", "mean"), ("x",), ("mean",), "mean", "pow -> mean"),
        ("g3", "pointwise", ("add", "sqrt"), ("mean",), ("sqrt",), None, "add -> sqrt"),
        ("g4", "pointwise", ("truediv",), ("x", "sqrt"), ("truediv",), None, "div"),
    ],
    "gemm_add_relu": [
        (
            "g0",
            "epilogue",
            ("gemm", "add", "relu"),
            ("x", "bias"),
            ("relu",),
            "gemm",
            "linear -> add -> relu",
        ),
        ("g1", "pointwise", ("add", "relu"), ("gemm", "bias"), ("relu",), None, "add -> relu"),
    ],
    "conv_relu_bias": [
        (
            "g0",
            "epilogue",
            ("conv", "relu", "add"),
            ("x", "bias"),
            ("add",),
            "conv",
            "conv2d -> relu -> add",
        ),
        ("g1", "pointwise", ("relu", "add"), ("conv", "bias"), ("add",), None, "relu -> add"),
    ],
    "bmm_scale": [
        ("g0", "epilogue", ("bmm", "mul"), ("a", "b"), ("mul",), "bmm", "bmm -> mul"),
        ("g1", "pointwise", ("mul",), ("bmm",), ("mul",), None, "mul"),
    ],
    "conv_bn_relu_seq": [
        (
            "g0",
            "reduction",
            ("features_1", "features_2"),
            ("features_0",),
            ("features_2",),
            "features_1",
            "batch_norm -> relu",
        ),
        (
            "g1",
            "reduction",
            ("features_1",),
            ("features_0",),
            ("features_1",),
            "features_1",
            "batch_norm",
        ),
        ("g2", "pointwise", ("features_2",), ("features_1",), ("features_2",), None, "relu"),
    ],
    "permute_between": [
        ("g0", "pointwise", ("relu", "mul"), ("x",), ("mul",), None, "relu -> mul"),
        ("g1", "pointwise", ("add",), ("permute",), ("add",), None, "add"),
        ("g2", "pointwise", ("tanh",), ("reshape",), ("tanh",), None, "tanh"),
    ],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reference_groups(name: str) -> None:
    assert groups_of(name) == EXPECTED[name]


def test_op_zoo_groups_are_convex_with_one_anchor() -> None:
    graph = capture_reference(ref_source("op_zoo"), "cpu")
    assert isinstance(graph, CapturedGraph)
    groups = fusion_groups(graph)
    assert [g.id for g in groups] == [f"g{i}" for i in range(len(groups))]
    for group in groups:
        classes = [graph.node(n).op_class for n in group.nodes]
        anchors = [n for n in group.nodes if graph.node(n).op_class != "pointwise"]
        assert anchors == ([group.anchor] if group.anchor else [])
        assert set(classes) <= {"pointwise", "reduction", "matmul", "conv"}
    # the live dropout, the float64 ops and the in-place relu_ are in no group
    grouped = {n for g in groups for n in g.nodes}
    assert not grouped & {"drop", "double", "mul_1", "float_1", "relu_", "add_3"}
    assert fusion_groups(graph) == groups  # deterministic


# -- hand-built graphs ------------------------------------------------------------------------
FULL = (8, 16)


def n(name: str, kind: str, op_class: str, *args: str | float, shape=FULL, **params) -> GraphNode:
    operands = tuple(Arg(node=a) if isinstance(a, str) else Arg(value=a) for a in args)
    meta = TensorMeta(shape, "float32") if shape is not None else None
    return GraphNode(name, "call_function", kind, op_class, operands, params, meta)


def inp(name: str, shape=FULL) -> GraphNode:
    return GraphNode(name, "placeholder", "input", "input", (), {}, TensorMeta(shape, "float32"))


def graph(*nodes: GraphNode, outputs: tuple[str, ...]) -> CapturedGraph:
    inputs = tuple(x.name for x in nodes if x.op == "placeholder")
    return CapturedGraph(nodes, inputs, f"return ({', '.join(outputs)},)", outputs)


def summaries(g: CapturedGraph) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(grp.kind, grp.summary, grp.nodes) for grp in fusion_groups(g)]


def test_pointwise_group_stays_convex() -> None:
    g = graph(
        inp("x"),
        n("a", "relu", "pointwise", "x"),
        n("v", "other", "other", "a"),  # a path that leaves {a, b} and comes back
        n("b", "add", "pointwise", "a", "v"),
        outputs=("b",),
    )
    assert summaries(g) == [("pointwise", "relu", ("a",)), ("pointwise", "add", ("b",))]


def test_pointwise_groups_split_by_shape() -> None:
    g = graph(
        inp("x"),
        inp("b", (16,)),
        n("scaled", "mul", "pointwise", "b", 2.0, shape=(16,)),
        n("y", "add", "pointwise", "x", "scaled"),
        n("z", "relu", "pointwise", "y"),
        outputs=("z",),
    )
    groups = fusion_groups(g)
    assert [(grp.nodes, grp.inputs) for grp in groups] == [
        (("scaled",), ("b",)),
        (("y", "z"), ("x", "scaled")),
    ]


def test_hand_written_layer_norm() -> None:
    """mean -> sub -> pow -> mean -> add -> sqrt -> div: the second mean's group holds the
    whole variance and normalisation, the first one stops where convexity would break."""
    reduced = (8, 1)
    g = graph(
        inp("x"),
        n("mu", "mean", "reduction", "x", shape=reduced, dim=(1,), keepdim=True),
        n("sub", "sub", "pointwise", "x", "mu"),
        n("sq", "pow", "pointwise", "sub", exponent=2.0),
        n("var", "mean", "reduction", "sq", shape=reduced, dim=(1,), keepdim=True),
        n("add", "add", "pointwise", "var", 1e-5, shape=reduced),
        n("std", "sqrt", "pointwise", "add", shape=reduced),
        n("out", "div", "pointwise", "sub", "std"),
        outputs=("out",),
    )
    assert [as_tuple(grp) for grp in fusion_groups(g)] == [
        (
            "g0",
            "reduction",
            ("mu", "sub", "sq"),
            ("x",),
            ("sub", "sq"),
            "mu",
            "mean -> sub -> pow",
        ),
        ("g1", "reduction", ("mu",), ("x",), ("mu",), "mu", "mean"),
        ("g2", "pointwise", ("sub", "sq"), ("x", "mu"), ("sub", "sq"), None, "sub -> pow"),
        (
            "g3",
            "reduction",
            ("sub", "sq", "var", "add", "std", "out"),
            ("x", "mu"),
            ("out",),
            "var",
            "sub -> pow -> mean -> add -> sqrt -> div",
        ),
        ("g4", "reduction", ("sq", "var"), ("sub",), ("var",), "var", "pow -> mean"),
        ("g5", "pointwise", ("add", "std"), ("var",), ("std",), None, "add -> sqrt"),
        ("g6", "pointwise", ("out",), ("sub", "std"), ("out",), None, "div"),
    ]


def test_prologue_read_elsewhere_is_left_out() -> None:
    g = graph(
        inp("x"),
        n("y", "mul", "pointwise", "x", 2.0),
        n("s", "sum", "reduction", "y", shape=(8, 1), dim=(1,), keepdim=True),
        n("c", "other", "other", "y"),
        outputs=("s", "c"),
    )
    assert summaries(g) == [("pointwise", "mul", ("y",)), ("reduction", "sum", ("s",))]


def test_one_source_per_reduction() -> None:
    g = graph(
        inp("a"),
        inp("b"),
        n("y", "mul", "pointwise", "a", "b"),
        n("s", "sum", "reduction", "y", shape=(8, 1), dim=(1,), keepdim=True),
        n("z", "div", "pointwise", "y", "s"),
        n("w", "add", "pointwise", "z", "b"),  # a second full-size input: not in the epilogue
        outputs=("w",),
    )
    groups = fusion_groups(g)
    reductions = [(grp.nodes, grp.inputs) for grp in groups if grp.kind == "reduction"]
    assert reductions == [(("s", "z"), ("y",)), (("s",), ("y",))]


def test_keepdim_false_epilogue_stays_at_the_reduced_shape() -> None:
    g = graph(
        inp("x"),
        n("s", "sum", "reduction", "x", shape=(8,), dim=(1,), keepdim=False),
        n("t", "mul", "pointwise", "s", 0.5, shape=(8,)),
        n("u", "unsqueeze", "data_movement", "t", shape=(8, 1)),
        n("v", "sub", "pointwise", "x", "u"),
        outputs=("v",),
    )
    reductions = [grp.nodes for grp in fusion_groups(g) if grp.kind == "reduction"]
    assert reductions == [("s", "t"), ("s",)]


def test_no_epilogue_group_when_the_anchor_is_read_elsewhere() -> None:
    g = graph(
        inp("a"),
        inp("b", (16, 16)),
        n("m", "matmul", "matmul", "a", "b"),
        n("r", "relu", "pointwise", "m"),
        outputs=("m", "r"),
    )
    assert summaries(g) == [("pointwise", "relu", ("r",))]


def test_identity_only_runs_are_not_groups() -> None:
    g = graph(inp("x"), n("i", "identity", "pointwise", "x"), outputs=("i",))
    assert fusion_groups(g) == []


def test_disjoint_and_op_class_counts() -> None:
    graph_ = capture_reference(ref_source("rmsnorm_dim1"), "cpu")
    assert isinstance(graph_, CapturedGraph)
    g0, g1, g2, g3, g4 = fusion_groups(graph_)
    assert disjoint([g1]) and disjoint([g2, g3, g4]) and disjoint([])
    assert not disjoint([g0, g1]) and not disjoint([g2, g0])
    assert op_class_counts(graph_) == {
        "input": 1,
        "pointwise": 4,
        "reduction": 1,
        "matmul": 0,
        "conv": 0,
        "data_movement": 0,
        "other": 0,
    }
