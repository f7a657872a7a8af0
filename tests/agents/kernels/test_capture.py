"""The graph capture: the child process on the reference problems (each captured once per
session, the capture's own cache shares them), its failure reasons, and the normalisation
rules on hand-made nodes (no child process)."""

from __future__ import annotations

import importlib.util
import json
import operator
import textwrap
import time
from pathlib import Path
from types import ModuleType

import psutil
import pytest
import torch

from engine.agents.kernels.capture import capture_reference
from engine.agents.kernels.capture_ops import Context, ModuleInfo, Opaque, RawNode, Ref
from engine.agents.kernels.capture_rules import node_from_raw
from engine.agents.kernels.ir import Arg, CapturedGraph, CaptureFailure, TensorMeta
from tests.agents.kernels.refs import NAMES, REFS_DIR, ref_source

TRACEABLE = tuple(n for n in NAMES if n != "untraceable")


def captured(name: str) -> CapturedGraph:
    graph = capture_reference(ref_source(name), "cpu")
    assert isinstance(graph, CapturedGraph), graph
    return graph


def load_ref(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"ref_{name}", REFS_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def forward_from_code(graph: CapturedGraph):
    """ModelNew.forward made of the captured code lines, as generated modules paste them."""
    body = [f"    {n.code}" for n in graph.nodes if n.code] + [f"    {graph.output_code}"]
    source = "\n".join([*graph.imports, f"def forward(self, {', '.join(graph.inputs)}):", *body])
    namespace = {"torch": torch, "operator": operator}
    exec(source, namespace)
    return namespace["forward"]


# -- the reference problems -----------------------------------------------------------------
@pytest.mark.parametrize("name", TRACEABLE)
def test_code_lines_reproduce_the_reference(name: str) -> None:
    graph = captured(name)
    ref = load_ref(name)
    model_new = type("ModelNew", (ref.Model,), {"forward": forward_from_code(graph)})
    torch.manual_seed(0)
    inputs = ref.get_inputs()
    torch.manual_seed(1)
    reference = ref.Model(*ref.get_init_inputs())
    torch.manual_seed(1)
    candidate = model_new(*ref.get_init_inputs())
    assert candidate.training and reference.training  # the benchmarker never calls eval()
    with torch.no_grad():
        torch.manual_seed(2)
        want = reference(*inputs)
        torch.manual_seed(2)
        got = candidate(*inputs)
    want_t = want if isinstance(want, tuple) else (want,)
    got_t = got if isinstance(got, tuple) else (got,)
    assert len(got_t) == len(want_t)
    for a, b in zip(got_t, want_t, strict=True):
        torch.testing.assert_close(a, b)
    for node in graph.nodes:
        assert ";" not in node.code and not node.code.endswith("= None")
        for expr in node.attrs.values():  # module tensors, as expressions on `self`
            assert isinstance(eval(expr, {}, {"self": candidate}), torch.Tensor)


def test_graph_round_trips_through_json() -> None:
    for name in TRACEABLE:
        graph = captured(name)
        assert CapturedGraph.from_json(json.loads(graph.dumps())) == graph


def shapes_and_kinds(graph: CapturedGraph) -> list[tuple]:
    return [
        (n.name, n.kind, n.op_class, n.meta.shape if n.meta else None, n.code) for n in graph.nodes
    ]


def test_gemm_add_relu() -> None:
    graph = captured("gemm_add_relu")
    assert shapes_and_kinds(graph) == [
        ("x", "input", "input", (64, 256), ""),
        ("gemm", "linear", "matmul", (64, 128), "gemm = self.gemm(x)"),
        ("bias", "param", "input", (128,), "bias = self.bias"),
        ("add", "add", "pointwise", (64, 128), "add = gemm + bias"),
        ("relu", "relu", "pointwise", (64, 128), "relu = torch.relu(add)"),
    ]
    gemm = graph.node("gemm")
    assert gemm.attrs == {"weight": "self.gemm.weight"}  # bias=False: no bias attr
    assert gemm.args == (Arg(node="x"),) and gemm.target == "nn.Linear"
    assert graph.node("add").args == (Arg(node="gemm"), Arg(node="bias"))
    assert (graph.inputs, graph.outputs, graph.output_code) == (("x",), ("relu",), "return relu")
    assert graph.imports == () and graph.device == "cpu"


def test_reductions_and_norms() -> None:
    rms = captured("rmsnorm_dim1")
    assert [(n.kind, n.params) for n in rms.nodes[1:]] == [
        ("pow", {"exponent": 2.0}),
        ("mean", {"dim": (1,), "keepdim": True}),
        ("add", {}),
        ("sqrt", {}),
        ("div", {}),
    ]
    assert rms.node("add").args == (Arg(node="mean"), Arg(value=1e-05))
    assert rms.node("mean").meta == TensorMeta((4, 1, 8, 8), "float32", True)
    softmax = captured("softmax_rows").node("softmax")
    assert (softmax.kind, softmax.params, softmax.code) == (
        "softmax",
        {"dim": 1},
        "softmax = torch.softmax(x, dim = -1)",
    )
    summed = captured("sum_dim1").node("sum_1")
    assert summed.params == {"dim": (1,), "keepdim": True} and summed.meta.shape == (8, 1, 32)
    ln = captured("layernorm").node("ln")
    assert (ln.kind, ln.op_class, ln.params, ln.attrs) == (
        "layer_norm",
        "reduction",
        {"normalized_shape": [8, 64], "eps": 1e-05},
        {"weight": "self.ln.weight", "bias": "self.ln.bias"},
    )


def test_conv_bmm_and_data_movement() -> None:
    conv = captured("conv_relu_bias").node("conv")
    assert (conv.kind, conv.op_class, conv.meta.shape) == ("conv2d", "conv", (2, 8, 14, 14))
    assert conv.params == {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": 1}
    assert conv.attrs == {"weight": "self.conv.weight", "bias": "self.conv.bias"}
    assert captured("conv_relu_bias").node("bias").meta.shape == (8, 1, 1)
    bmm = captured("bmm_scale")
    assert [(n.kind, n.op_class) for n in bmm.nodes] == [
        ("input", "input"),
        ("input", "input"),
        ("bmm", "matmul"),
        ("mul", "pointwise"),
    ]
    assert bmm.node("mul").args == (Arg(node="bmm"), Arg(value=0.5))
    moved = captured("permute_between")
    assert [(n.name, n.kind, n.op_class) for n in moved.nodes if n.op_class != "pointwise"] == [
        ("x", "input", "input"),
        ("permute", "permute", "data_movement"),
        ("getattr_1", "other", "other"),  # y.shape: not a tensor
        ("getitem", "other", "other"),
        ("reshape", "reshape", "data_movement"),
    ]
    assert moved.node("permute").meta == TensorMeta((8, 32, 16), "float32", False)
    assert moved.node("reshape").args == (Arg(node="add"), Arg(node="getitem"))


def test_sequential_submodules_and_a_renamed_parameter() -> None:
    graph = captured("conv_bn_relu_seq")
    assert graph.inputs == ("input_1",) and graph.node("input_1").code == ""
    conv, bn, relu = (graph.node(f"features_{i}") for i in range(3))
    assert conv.code == 'features_0 = getattr(self.features, "0")(input_1)'
    assert conv.attrs["weight"] == 'getattr(self.features, "0").weight'
    assert (bn.kind, bn.params) == ("batch_norm", {"eps": 1e-05, "momentum": 0.1, "training": True})
    assert set(bn.attrs) == {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}
    assert relu.kind == "relu"  # inplace=True on a value nothing else reads


def test_op_zoo_spellings() -> None:
    graph = captured("op_zoo")
    kinds = {n.name: (n.kind, n.params) for n in graph.nodes}
    assert [kinds[n][0] for n in ("add", "add_1", "add_2", "add_3")] == ["add"] * 3 + ["other"]
    assert [kinds[n][0] for n in ("relu", "relu_1", "act")] == ["relu"] * 3
    assert kinds["gelu"] == ("gelu", {"approximate": "tanh"})
    assert kinds["gelu_1"] == ("gelu", {"approximate": "none"})
    assert kinds["pow_1"] == ("pow", {"exponent": 2.0}) and kinds["truediv"][0] == "div"
    assert kinds["clamp"] == ("clamp", {"min": -1.0, "max": 1.0})
    assert kinds["clamp_1"] == ("clamp", {"min": 0.0, "max": None})  # max=inf
    assert kinds["hardtanh_1"] == ("hardtanh", {"min_val": -2.0, "max_val": 2.0})
    assert kinds["relu6"] == ("hardtanh", {"min_val": 0.0, "max_val": 6.0})
    assert kinds["leaky_relu"] == ("leaky_relu", {"negative_slope": 0.2})
    assert kinds["drop0"][0] == "identity" and kinds["drop"][0] == "other"  # training, p=0.5
    assert kinds["sum_1"] == kinds["sum_2"] == ("sum", {"dim": (1,), "keepdim": True})
    assert kinds["sum_3"] == ("sum", {"dim": (0, 1), "keepdim": False})
    assert kinds["softmax"] == kinds["softmax_1"] == ("softmax", {"dim": 1})
    assert [kinds[n][0] for n in ("double", "mul_1", "float_1")] == ["other"] * 3  # float64
    assert kinds["max_1"][0] == "maximum" and kinds["max_2"] == (
        "amax",
        {"dim": (0, 1), "keepdim": False},
    )
    assert kinds["max_3"][0] == kinds["getitem"][0] == "other"  # max over a dim: a tuple
    assert kinds["var"] == ("var", {"dim": (1,), "keepdim": True, "correction": 0})
    assert kinds["relu_"][0] == "other"  # in place on a value the return reads again
    assert kinds["ln"] == ("layer_norm", {"normalized_shape": [16], "eps": 1e-05})
    assert graph.node("ln").attrs == {}  # elementwise_affine=False
    assert kinds["view"][0] == "view" and graph.node("view").op_class == "data_movement"
    assert graph.imports == ("from math import inf",)
    assert graph.node("add_3").args == (Arg(node="add_2"), Arg(node="x"))


# -- failures -------------------------------------------------------------------------------
def test_untraceable_reference() -> None:
    failure = capture_reference(ref_source("untraceable"), "cpu")
    assert failure == CaptureFailure(
        "torch.fx could not trace Model.forward: TraceError: symbolically traced variables "
        "cannot be used as inputs to control flow"
    )


def test_syntax_error() -> None:
    failure = capture_reference("class Model(:\n    pass\n", "cpu")
    assert isinstance(failure, CaptureFailure)
    assert failure.reason.startswith("the reference does not compile: SyntaxError:")


REFERENCE_TAIL = """
import torch
import torch.nn as nn


class Model(nn.Module):
    def forward(self, x):
        return x * 2.0


def get_inputs():
    {inputs}


def get_init_inputs():
    return []
"""


def reference_with(inputs_body: str, head: str = "") -> str:
    return head + REFERENCE_TAIL.replace("{inputs}", textwrap.indent(inputs_body, "    ").strip())


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "sleeper.pid"
    source = reference_with(
        "import subprocess, time\n"
        "p = subprocess.Popen(['sleep', '60'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    started = time.monotonic()
    failure = capture_reference(source, "cpu", timeout_s=15)
    assert failure == CaptureFailure("the capture did not finish within 15 s")
    assert time.monotonic() - started < 30
    sleeper = int(pid_file.read_text())
    assert not psutil.pid_exists(sleeper) or psutil.Process(sleeper).status() == "zombie"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("import os\nos.abort()", "the capture worker died of signal 6 (SIGABRT)"),
        ("import os\nos._exit(3)", "the capture worker exited with status 3"),
    ],
)
def test_crashes(body: str, reason: str) -> None:
    failure = capture_reference(reference_with(body), "cpu")
    assert isinstance(failure, CaptureFailure) and failure.reason.startswith(reason)


FAKE_HOSTILE = """
import torch
import torch.nn as nn

print("the reference talks on stdout")


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.repeat = int(torch.ones(1).item()) + 1  # data-dependent: no FakeTensorMode
        print("and in __init__")

    def forward(self, x):
        return torch.relu(x) * self.repeat


def get_inputs():
    import os

    assert os.environ["OMP_NUM_THREADS"] == "1"  # the capture sets it for its child
    return [torch.randn({shape})]


def get_init_inputs():
    return []
"""


def test_real_tensor_fallback_for_small_inputs() -> None:
    graph = capture_reference(FAKE_HOSTILE.replace("{shape}", "4, 8"), "cpu")
    assert isinstance(graph, CapturedGraph), graph
    assert [n.kind for n in graph.nodes] == ["input", "relu", "mul"]
    assert graph.node("mul").args == (Arg(node="relu"), Arg(value=2))


def test_no_real_tensor_fallback_for_big_inputs() -> None:
    failure = capture_reference(FAKE_HOSTILE.replace("{shape}", "1 << 27"), "cpu")  # 512 MB
    assert isinstance(failure, CaptureFailure)
    assert failure.reason.startswith("Model(*get_init_inputs()) failed: ")
    assert failure.reason.endswith("(under FakeTensorMode; inputs too big to retry for real)")


def test_cache_returns_the_same_capture() -> None:
    first = captured("softmax_rows")
    started = time.monotonic()
    again = capture_reference(ref_source("softmax_rows"), "cpu")
    assert again is first and time.monotonic() - started < 0.05


def test_cuda_capture_without_a_cuda_build() -> None:
    """Keyed by device; where torch cannot place modules on CUDA, fake CPU tensors give the
    same graph (shapes and code do not depend on the device)."""
    graph = capture_reference(ref_source("softmax_rows"), "cuda:0")
    assert isinstance(graph, CapturedGraph) and graph.device == "cuda"
    assert graph.nodes == captured("softmax_rows").nodes


# -- normalisation rules without a child process ----------------------------------------------
X = TensorMeta((8, 16), "float32")
CTX = Context(
    metas={
        "x": X,
        "x4": TensorMeta((2, 3, 8, 8), "float32"),
        "h": TensorMeta((8, 16), "float16"),
        "w": TensorMeta((16,), "float32"),
        "W": TensorMeta((16, 16), "float32"),
        "y": X,
        "z": X,
    },
    ops={"x": "placeholder", "y": "call_function", "z": "call_function"},
    users={"x": 1, "y": 1, "z": 2},
)
x, w = Ref("x"), Ref("w")


def rule(target: str, *args, meta: TensorMeta | None = X, op: str = "", **kwargs):
    opcode = op or ("call_method" if target.startswith("Tensor.") else "call_function")
    node = node_from_raw(RawNode("n", opcode, target, args, kwargs, meta), CTX)
    return node.kind, node.params


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda: rule("operator.add", x, 1.0), ("add", {})),
        (lambda: rule("torch.add", x, x, alpha=2), ("other", {})),
        (lambda: rule("Tensor.sub", x, 2.0, alpha=1), ("sub", {})),
        (lambda: rule("torch.div", x, 2.0, rounding_mode="floor"), ("other", {})),
        (lambda: rule("operator.pow", x, 2), ("pow", {"exponent": 2.0})),
        (lambda: rule("operator.pow", 2.0, x), ("other", {})),
        (lambda: rule("torch.pow", x, w), ("other", {})),
        (lambda: rule("F.gelu", x), ("gelu", {"approximate": "none"})),
        (lambda: rule("torch.clamp", x, min=0.0), ("clamp", {"min": 0.0, "max": None})),
        (lambda: rule("torch.clamp", x, w), ("other", {})),
        (lambda: rule("Tensor.clamp_min", x, 0.5), ("clamp", {"min": 0.5, "max": None})),
        (lambda: rule("F.softplus", x), ("softplus", {"beta": 1.0, "threshold": 20.0})),
        (lambda: rule("F.elu", x, 0.5), ("elu", {"alpha": 0.5})),
        (lambda: rule("torch.relu", Ref("h")), ("other", {})),  # float16
        (lambda: rule("torch.relu", x, meta=TensorMeta((8, 16), "float16")), ("other", {})),
        (lambda: rule("Tensor.relu_", Ref("y")), ("relu", {})),  # its input is read once
        (lambda: rule("Tensor.relu_", Ref("z")), ("other", {})),  # read again afterwards
        (lambda: rule("F.relu", x, inplace=True), ("other", {})),  # a forward parameter
        (lambda: rule("F.dropout", x, p=0.0), ("identity", {})),
        (lambda: rule("F.dropout", x, 0.5), ("other", {})),  # F.dropout trains by default
        (lambda: rule("F.dropout", x, 0.5, False), ("identity", {})),
        (lambda: rule("Tensor.to", x, Opaque("torch.float32")), ("identity", {})),
        (lambda: rule("Tensor.to", x, Opaque("torch.float16")), ("other", {})),
        (lambda: rule("Tensor.contiguous", x), ("identity", {})),
        (
            lambda: rule("torch.sum", x, dim=-1, keepdim=True),
            ("sum", {"dim": (1,), "keepdim": True}),
        ),
        (lambda: rule("Tensor.sum", x, 1), ("sum", {"dim": (1,), "keepdim": False})),
        (lambda: rule("torch.sum", x), ("sum", {"dim": (0, 1), "keepdim": False})),
        (lambda: rule("torch.sum", x, dtype=Opaque("torch.float64")), ("other", {})),
        (lambda: rule("torch.mean", x, [-1, 0]), ("mean", {"dim": (0, 1), "keepdim": False})),
        (lambda: rule("torch.sum", x, 2), ("other", {})),  # no such dim
        (lambda: rule("torch.softmax", x, -1), ("softmax", {"dim": 1})),
        (lambda: rule("F.softmax", x), ("other", {})),  # implicit dim
        (lambda: rule("F.log_softmax", x, dim=0), ("log_softmax", {"dim": 0})),
        (lambda: rule("torch.logsumexp", x, 1), ("logsumexp", {"dim": (1,), "keepdim": False})),
        (
            lambda: rule("torch.var", x, 1, unbiased=False),
            ("var", {"dim": (1,), "keepdim": False, "correction": 0}),
        ),
        (
            lambda: rule("Tensor.var", x),
            ("var", {"dim": (0, 1), "keepdim": False, "correction": 1}),
        ),
        (
            lambda: rule("torch.norm", x, dim=1, p=2),
            ("norm", {"dim": (1,), "keepdim": False, "p": 2}),
        ),
        (lambda: rule("torch.norm", x, dim=1, p=1), ("other", {})),
        (
            lambda: rule("linalg.vector_norm", x, 2, -1, True),
            ("norm", {"dim": (1,), "keepdim": True, "p": 2}),
        ),
        (
            lambda: rule("torch.argmax", x, 1, meta=TensorMeta((8,), "int64")),
            ("argmax", {"dim": (1,), "keepdim": False}),
        ),
        (lambda: rule("torch.cumsum", x, 1), ("other", {})),
        (lambda: rule("Tensor.view", x, 16, 8, meta=TensorMeta((16, 8), "float32")), ("view", {})),
        (lambda: rule("operator.getitem", x, 0, meta=None), ("other", {})),
        (lambda: rule("torch.addmm", w, x, Ref("W"), beta=2), ("other", {})),
    ],
)
def test_rules(call, expected) -> None:
    assert call() == expected


def test_rule_operands() -> None:
    def node(target: str, *args, meta=X, **kwargs):
        return node_from_raw(RawNode("n", "call_function", target, args, kwargs, meta), CTX)

    assert node("operator.truediv", x, 2.0).args == (Arg(node="x"), Arg(value=2.0))
    assert node("operator.sub", 1.0, x).args == (Arg(value=1.0), Arg(node="x"))
    ln = node("F.layer_norm", x, [16], w, None, 1e-6)
    assert (ln.kind, ln.args, ln.params) == (
        "layer_norm",
        (Arg(node="x"), Arg(node="w"), Arg(value=None)),
        {"normalized_shape": [16], "eps": 1e-6},
    )
    rms = node("F.rms_norm", x, 16)
    assert rms.params == {"normalized_shape": [16], "eps": torch.finfo(torch.float32).eps}
    linear = node("F.linear", x, Ref("W"), None)
    assert (linear.kind, linear.op_class, linear.args) == (
        "linear",
        "matmul",
        (Arg(node="x"), Arg(node="W"), Arg(value=None)),
    )
    conv = node(
        "F.conv2d", Ref("x4"), Ref("W"), None, 2, 1, meta=TensorMeta((2, 3, 4, 4), "float32")
    )
    assert conv.params == {"stride": [2, 2], "padding": [1, 1], "dilation": [1, 1], "groups": 1}
    other = node("torch.cumsum", x, dim=1)
    assert (other.args, other.params) == ((Arg(node="x"),), {})
    bn = node("F.batch_norm", x, w, w, None, None, True)
    assert (bn.kind, bn.params) == ("batch_norm", {"eps": 1e-05, "momentum": 0.1, "training": True})


def module_node(target: str, training: bool = True, **constants):
    info = ModuleInfo("self.m", training, constants, ("weight", "bias"))
    node = node_from_raw(RawNode("m", "call_module", target, (x,), {}, X, module=info), CTX)
    return node.kind, node.params, node.attrs


def test_module_rules() -> None:
    assert module_node("nn.Dropout", p=0.5)[0] == "other"
    assert module_node("nn.Dropout", training=False, p=0.5)[0] == "identity"
    assert module_node("nn.GELU", approximate="tanh")[:2] == ("gelu", {"approximate": "tanh"})
    assert module_node("nn.ReLU", inplace=True)[0] == "other"  # x is a forward input
    assert module_node("nn.BatchNorm2d", eps=1e-5, momentum=0.1, track_running_stats=True) == (
        "batch_norm",
        {"eps": 1e-5, "momentum": 0.1, "training": True},
        {"weight": "self.m.weight", "bias": "self.m.bias"},
    )
    assert module_node("nn.BatchNorm2d", eps=1e-5, momentum=None)[0] == "other"
    conv = dict(stride=[1, 1], padding=[1, 1], dilation=[1, 1], groups=1)
    assert module_node("nn.Conv2d", padding_mode="zeros", **conv)[0] == "conv2d"
    assert module_node("nn.Conv2d", padding_mode="reflect", **conv)[0] == "other"
    assert module_node("nn.Softmax", dim=None)[0] == "other"
    assert module_node("stark_reference.MyBlock")[0] == "other"


def test_placeholder_default() -> None:
    node = node_from_raw(RawNode("scale", "placeholder", "scale", (2.0,)), CTX)
    assert (node.kind, node.op_class, node.params) == ("input", "input", {"default": 2.0})
