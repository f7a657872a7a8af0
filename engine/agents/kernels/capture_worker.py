"""The graph capture's child process: the only module of the kernel writer that imports torch.

    echo '{"source": "<reference file text>", "device": "cpu"}' \\
        | python -m engine.agents.kernels.capture_worker

writes `CapturedGraph.to_json()`, or `{"failure": "<what failed>: <first line of the
error>"}`, on stdout and exits 0 either way. The reference runs in its own process because
its constructor and get_inputs() are arbitrary code: a crash, a hang or a 6 GB allocation
must cost the caller a `CaptureFailure`, not the agent. Model and inputs are built under
FakeTensorMode (shapes without memory); real tensors are the fallback only for small inputs.
The module stays in training mode, as the benchmarker runs it (it never calls eval()).
Anything the reference prints goes to stderr: stdout carries only the answer.
"""

from __future__ import annotations

import contextlib
import json
import keyword
import os
import sys
import types
from collections.abc import Iterator
from typing import Any

import torch
import torch.fx
from torch._subclasses import FakeTensorMode
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from engine.agents.kernels.capture_code import FxCode, FxCodeError, read_fx_code
from engine.agents.kernels.capture_ops import Context, ModuleInfo, Opaque, RawNode, Ref
from engine.agents.kernels.capture_rules import node_from_raw
from engine.agents.kernels.ir import CapturedGraph, TensorMeta

REAL_INPUT_LIMIT = 256 * 1024 * 1024  # bytes of inputs real tensors may take when fake fails
MODULE_CONSTANTS = [
    "inplace",
    "approximate",
    "beta",
    "threshold",
    "alpha",
    "negative_slope",
    "min_val",
    "max_val",
    "p",
    "dim",
    "normalized_shape",
    "eps",
    "elementwise_affine",
    "num_groups",
    "momentum",
    "track_running_stats",
    "affine",
    "stride",
    "padding",
    "dilation",
    "groups",
    "output_padding",
    "padding_mode",
    "start_dim",
    "end_dim",
]  # noqa: SIM905
REFERENCE_MODULE = "stark_reference"


class CaptureError(Exception):
    """A failure whose message is already the reason the caller sees."""


def first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


@contextlib.contextmanager
def stage(what: str) -> Iterator[None]:
    """Turn any exception inside into a CaptureError saying `what` failed."""
    try:
        yield
    except CaptureError:
        raise
    except BaseException as exc:  # noqa: BLE001 - SystemExit in get_inputs is a failure too
        raise CaptureError(f"{what}: {first_line(exc)}") from exc


def load_reference(source: str) -> types.ModuleType:
    module = types.ModuleType(REFERENCE_MODULE)
    sys.modules[REFERENCE_MODULE] = module  # dataclasses and pickling look modules up here
    with stage("the reference does not compile"):
        code = compile(source, "<reference>", "exec")
    with stage("running the reference file failed"):
        exec(code, module.__dict__)
    missing = [n for n in ("Model", "get_inputs", "get_init_inputs") if not hasattr(module, n)]
    if missing:
        raise CaptureError(f"the reference defines no {', '.join(missing)}")
    return module


def build(reference: types.ModuleType, device: torch.device) -> tuple[Any, list[Any]]:
    with stage("get_init_inputs() failed"):
        init_inputs = reference.get_init_inputs()
    with stage("Model(*get_init_inputs()) failed"):
        model = reference.Model(*init_inputs)
    with stage("get_inputs() failed"):
        inputs = list(reference.get_inputs())
    with stage(f"moving the model to {device} failed"):
        if isinstance(model, torch.nn.Module) and not on_device(model, device):
            model = model.to(device)
        inputs = [x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs]
    return model, inputs


def on_device(model: torch.nn.Module, device: torch.device) -> bool:
    """Whether no tensor of `model` is elsewhere: `.to()` swaps fake parameters, which fails
    for some under FakeTensorMode, so it is only called when something has to move."""
    tensors = [*model.parameters(), *model.buffers()]
    return all(t.device.type == device.type for t in tensors)


def trace_and_propagate(
    model: Any, inputs: list[Any], mode: FakeTensorMode | None
) -> torch.fx.GraphModule:
    with stage("torch.fx could not trace Model.forward"):
        graph_module = torch.fx.symbolic_trace(model)
    with stage("shape propagation failed"), torch.no_grad(), mode or contextlib.nullcontext():
        ShapeProp(graph_module).propagate(*inputs)
    return graph_module


def input_bytes(inputs: list[Any]) -> int:
    return sum(x.numel() * x.element_size() for x in inputs if isinstance(x, torch.Tensor))


def capture_fake(reference: types.ModuleType, device: str) -> torch.fx.GraphModule:
    """Under FakeTensorMode; a CUDA graph is captured on fake CPU tensors where this torch
    cannot place modules on CUDA (shapes and code do not depend on the device)."""
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        try:
            model, inputs = build(reference, torch.device(device))
        except CaptureError:
            if device == "cpu":
                raise
            model, inputs = build(reference, torch.device("cpu"))
    return trace_and_propagate(model, inputs, mode)


def capture_real(reference: types.ModuleType, device: str, fake_error: CaptureError) -> Any:
    try:
        with FakeTensorMode(allow_non_fake_inputs=True):
            size = input_bytes(list(reference.get_inputs()))
    except Exception:  # noqa: BLE001 - the inputs' size is unknown: do not risk real ones
        raise fake_error from None
    if size >= REAL_INPUT_LIMIT:
        raise CaptureError(f"{fake_error} (under FakeTensorMode; inputs too big to retry for real)")
    real_device = device if device == "cpu" or torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model, inputs = build(reference, torch.device(real_device))
    return trace_and_propagate(model, inputs, None)


def capture(source: str, device: str) -> CapturedGraph:
    reference = load_reference(source)
    try:
        graph_module = capture_fake(reference, device)
    except CaptureError as fake_error:
        if str(fake_error).startswith("torch.fx could not trace"):
            raise
        graph_module = capture_real(reference, device, fake_error)
    return to_graph(graph_module, device)


# -- fx -> ir ------------------------------------------------------------------------------
def _target_names() -> dict[int, str]:
    """id(callable) -> its short spelling, "operator.add", "F.relu", "torch.relu", ..."""
    names: dict[int, str] = {}
    import operator

    for prefix, namespace in (
        ("operator", operator),
        ("F", torch.nn.functional),
        ("torch", torch),
        ("special", torch.special),
        ("linalg", torch.linalg),
    ):
        for name in sorted(dir(namespace)):
            obj = getattr(namespace, name, None)
            if callable(obj) and not isinstance(obj, type) and not name.startswith("__"):
                names.setdefault(id(obj), f"{prefix}.{name}")
    return names


TARGET_NAMES = _target_names()


def target_name(node: torch.fx.Node, graph_module: torch.fx.GraphModule) -> str:
    if node.op == "call_function":
        known = TARGET_NAMES.get(id(node.target))
        return known or torch.fx.node._get_qualified_name(node.target)  # type: ignore[arg-type]
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    if node.op == "call_module":
        cls = type(graph_module.get_submodule(str(node.target)))
        if cls.__module__.startswith("torch.nn.modules"):
            return f"nn.{cls.__name__}"
        return f"{cls.__module__}.{cls.__qualname__}"
    return str(node.target)


def plain(value: Any) -> Any:
    """fx arguments as plain data: nodes -> Ref, torch constants -> Opaque."""
    if isinstance(value, torch.fx.Node):
        return Ref(value.name)
    if isinstance(value, list | tuple):
        return type(value)(plain(v) for v in value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return Opaque(
        str(value) if isinstance(value, torch.dtype | torch.memory_format) else repr(value)
    )


def tensor_meta(node: torch.fx.Node) -> TensorMeta | None:
    meta = node.meta.get("tensor_meta")
    if not isinstance(meta, TensorMetadata):
        return None
    shape = tuple(int(s) for s in meta.shape)
    expected, contiguous = 1, True
    for size, stride in reversed(list(zip(shape, meta.stride, strict=True))):
        if size != 1 and stride != expected:
            contiguous = False
        expected *= size
    return TensorMeta(shape, str(meta.dtype).removeprefix("torch."), contiguous)


def module_info(node: torch.fx.Node, graph_module: torch.fx.GraphModule) -> ModuleInfo:
    module = graph_module.get_submodule(str(node.target))
    constants = {}
    for name in MODULE_CONSTANTS:
        value = plain(getattr(module, name, None))
        if hasattr(module, name) and not isinstance(value, Opaque):
            constants[name] = list(value) if isinstance(value, tuple) else value
    tensors = [n for n, t in module.named_parameters(recurse=False) if t is not None]
    tensors += [n for n, t in module.named_buffers(recurse=False) if t is not None]
    return ModuleInfo(attribute_path(str(node.target)), module.training, constants, tuple(tensors))


def attribute_path(target: str) -> str:
    """ "features.0" -> 'getattr(self.features, "0")': a Python expression, as fx spells it."""
    expr = "self"
    for part in target.split("."):
        ok = part.isidentifier() and not keyword.iskeyword(part)
        expr = f"{expr}.{part}" if ok else f"getattr({expr}, {json.dumps(part)})"
    return expr


def raw_node(node: torch.fx.Node, graph_module: torch.fx.GraphModule, code: FxCode) -> RawNode:
    args = plain(node.args)
    if node.op == "placeholder":
        args = tuple(a.text if isinstance(a, Opaque) else a for a in args)
    return RawNode(
        name=node.name,
        op=node.op,
        target=target_name(node, graph_module),
        args=args,
        kwargs=plain(dict(node.kwargs)),
        meta=tensor_meta(node),
        code="" if node.op == "placeholder" else code.lines.get(node.name, ""),
        module=module_info(node, graph_module) if node.op == "call_module" else None,
    )


def to_graph(graph_module: torch.fx.GraphModule, device: str) -> CapturedGraph:
    try:
        code = read_fx_code(graph_module, REFERENCE_MODULE)
    except FxCodeError as exc:
        raise CaptureError(str(exc)) from exc
    fx_nodes = [n for n in graph_module.graph.nodes if n.op != "output"]
    unwritten = [n.name for n in fx_nodes if n.op != "placeholder" and n.name not in code.lines]
    if unwritten:
        raise CaptureError(f"fx wrote no statement for {', '.join(unwritten)}")
    output = next(n for n in graph_module.graph.nodes if n.op == "output")
    ctx = Context(
        metas={n.name: tensor_meta(n) for n in fx_nodes},
        ops={n.name: n.op for n in fx_nodes},
        users={n.name: len(n.users) for n in fx_nodes},
    )
    nodes = tuple(node_from_raw(raw_node(n, graph_module, code), ctx) for n in fx_nodes)
    outputs: list[str] = []

    def read(node: torch.fx.Node) -> torch.fx.Node:
        outputs.append(node.name)
        return node

    torch.fx.node.map_arg(output.args, read)
    constants = [
        n.name for n in fx_nodes if n.op == "get_attr" and n.target.startswith("_tensor_constant")
    ]
    if constants:
        raise CaptureError(
            f"Model.forward builds tensor constants ({', '.join(constants)}) that code in a "
            "subclass of Model cannot reach"
        )
    return CapturedGraph(
        nodes=nodes,
        inputs=tuple(n.name for n in fx_nodes if n.op == "placeholder"),
        output_code=code.output,
        outputs=tuple(dict.fromkeys(outputs)),
        device=device,
        imports=code.imports,
    )


def main() -> int:
    answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever the reference prints (Python or C++) lands on stderr
    sys.stdout = sys.stderr
    try:
        request = json.loads(sys.stdin.read())
        device = "cuda" if str(request.get("device", "cpu")).startswith("cuda") else "cpu"
        result: dict[str, Any] = capture(request["source"], device).to_json()
    except CaptureError as exc:
        result = {"failure": str(exc)}
    except Exception as exc:  # noqa: BLE001 - the caller gets a reason, never a traceback
        result = {"failure": f"the capture failed: {first_line(exc)}"}
    answer.write(json.dumps(result))
    answer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
