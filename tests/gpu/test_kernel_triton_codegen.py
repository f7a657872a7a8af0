"""The Triton code generator (engine/agents/kernels/triton_codegen.py) on hand-made graphs.

Under Triton's CPU interpreter, in one child process (TRITON_INTERPRET=1 must be set before
Triton is first imported, and this process has imported it: interpret_generated.py): each
case's `python_source` is written to a file and imported (`@triton.jit` reads its source
with `inspect`), its `call` evaluated on CPU tensors with `self.` holding the parameters, and
the result compared with torch (1e-4). Cases: a pointwise chain with (C, 1, 1) and (W,)
broadcasts, softmax rows of 37 and of 300 (two tiles of 256), an rmsnorm-style reduction
group (prologue, mean, epilogue), linear -> add -> relu in place, layer_norm with weight and
bias, a per-row sum epilogue, log_softmax; and every pointwise formula in one multi-output
kernel. Shapes are tiny: the interpreter runs programs one by one with numpy.

On a GPU (@gpu), the same cases compiled by Triton for the device.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("triton")
torch = pytest.importorskip("torch")

from engine.agents.kernels.ir import GeneratedGroup  # noqa: E402
from engine.agents.kernels.schedule import ScheduleError  # noqa: E402
from engine.agents.kernels.triton_codegen import generate_triton, supports_triton  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel_graphs import (  # noqa: E402
    FORMULA_BINARY,
    Case,
    GraphBuilder,
    all_cases,
    formula_case,
    formula_inputs,
    formula_table,
    interpreter_cases,
    linear_add_relu_case,
    make_group,
    pointwise_bias_case,
    self_with,
    softmax_case,
)

CASES = {case.name: case for case in interpreter_cases()}
SCHEDULES = {"default": {}, "block256-rows4": {"block": 256, "num_warps": 2, "rows": 4}}
DRIVER = Path(__file__).resolve().parent / "interpret_generated.py"
INTERPRETER_TIMEOUT_S = 240
REJECTS = {
    "wrong_shape": (
        {"shape": [6, 38], "dtype": "float32"},
        r"has shape \(6, 38\); the kernel was generated for \(6, 37\)",
    ),
    "wrong_dtype": (
        {"shape": [6, 37], "dtype": "float64"},
        "torch.float64; the kernel was generated for torch.float32",
    ),
    "strided": ({"shape": [37, 6], "dtype": "float32", "transpose": True}, "must be contiguous"),
}


def write(generated: GeneratedGroup, folder: Path, stem: str) -> str:
    """python_source as a file: @triton.jit reads its kernel's source with inspect."""
    path = folder / f"stark_generated_{stem}.py"
    path.write_text(generated.python_source)
    return str(path)


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every case x schedule, the formulas and the launcher's rejections, run in ONE child
    process with TRITON_INTERPRET=1 (see interpret_generated.py for why a child)."""
    folder = tmp_path_factory.mktemp("generated")
    jobs: list[dict[str, Any]] = []
    for (name, case), (label, schedule) in itertools.product(CASES.items(), SCHEDULES.items()):
        generated = generate_triton(case.graph, case.group, schedule)
        source = write(generated, folder, f"{name}_{label}".replace("-", "_"))
        jobs.append({"id": f"{name}-{label}", "kind": "compare", "case": name, "source": source,
                     "call": generated.call})  # fmt: skip
    formulas = formula_case()
    generated = generate_triton(formulas.graph, formulas.group)
    jobs.append({"id": "formulas", "kind": "compare", "case": "formulas",
                 "source": write(generated, folder, "formulas"), "call": generated.call})  # fmt: skip
    softmax = softmax_case()
    source = write(generate_triton(softmax.graph, softmax.group), folder, "rejects")
    for label, (spec, _) in REJECTS.items():
        jobs.append(
            {"id": label, "kind": "reject", "source": source, "launch": "g0_launch", **spec}
        )
    env = {**os.environ, "TRITON_INTERPRET": "1",
           "TRITON_CACHE_DIR": str(tmp_path_factory.mktemp("triton-cache"))}  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(DRIVER)], input=json.dumps(jobs), capture_output=True, text=True,
        env=env, timeout=INTERPRETER_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)


def assert_outputs(result: dict[str, Any], labels: list[str] | None = None) -> None:
    assert "crash" not in result, result.get("crash")
    assert result["count"][0] == result["count"][1]
    for at, output in enumerate(result["outputs"]):
        label = labels[at] if labels else f"output {at}"
        assert output["same_shape"], label
        assert output["ok"], (
            f"{label}: max abs err {output['max_abs_err']}, (x, got, want) {output['first_bad']}"
        )


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("name", list(CASES))
def test_generated_kernel_matches_torch(
    interpreted: dict[str, Any], name: str, schedule: str
) -> None:
    case = CASES[name]
    assert supports_triton(case.graph, case.group) is None
    assert_outputs(interpreted[f"{name}-{schedule}"])


def test_every_formula_matches_torch(interpreted: dict[str, Any]) -> None:
    """All unary kinds (parameter variants too) and binary ops, NaN included, in one kernel."""
    labels = [f"{kind} {params}" for kind, params, _ in formula_table()] + list(FORMULA_BINARY)
    assert_outputs(interpreted["formulas"], labels)
    assert len(interpreted["formulas"]["outputs"]) == len(labels)


@pytest.mark.parametrize("label", list(REJECTS))
def test_launcher_rejects_inputs_it_was_not_generated_for(
    interpreted: dict[str, Any], label: str
) -> None:
    result = interpreted[label]
    assert result.get("error") == "ValueError", result
    assert re.search(REJECTS[label][1], result["message"]), result["message"]


def test_kernel_and_launcher_are_named_after_the_group() -> None:
    case = pointwise_bias_case()
    generated = generate_triton(case.graph, case.group, {"block": 512, "num_warps": 8})
    source = generated.python_source
    assert "@triton.jit\ndef g0_mul_gelu_add_mul_sub_kernel(" in source
    assert generated.call == "g0_launch(x, self.bias, self.scale)"
    assert "BLOCK=512, num_warps=8" in source
    assert "offs // 35 % 3" in source and "offs % 7" in source  # the two broadcasts
    assert generated.schedule == {"block": 512, "num_warps": 8, "rows": 1}


def test_epilogue_runs_in_place_on_the_anchor_result() -> None:
    generated = generate_triton(linear_add_relu_case().graph, linear_add_relu_case().group)
    source = generated.python_source
    assert "gemm = torch.nn.functional.linear(x, gemm_weight, gemm_bias).contiguous()" in source
    assert "torch.empty" not in source.split("def g0_launch")[1]
    assert generated.call == "g0_launch(x, self.bias, self.gemm.weight, self.gemm.bias)"


def test_wide_rows_walk_tiles_of_the_block() -> None:
    generated = generate_triton(softmax_case(300).graph, softmax_case(300).group, {"block": 256})
    assert "for start in range(0, 300, BLOCK):" in generated.python_source
    assert "ROWS=1, BLOCK=256" in generated.python_source


def test_unknown_schedule_key_is_an_error() -> None:
    case = softmax_case()
    with pytest.raises(ScheduleError, match="threads"):
        generate_triton(case.graph, case.group, {"threads": 256})


def _reduction(kind: str, shape: tuple[int, ...], out: tuple[int, ...], **params: Any) -> Case:
    b = GraphBuilder()
    x = b.input("x", shape)
    node = b.op("r", kind, x, shape=out, dtype="int64" if kind == "argmax" else "float32", **params)
    graph = b.graph(node)
    return Case(
        kind, graph, make_group(graph, "g0", "reduction", [node], node), {}, lambda f, p: None
    )


def unsupported_cases() -> list[tuple[Case, str]]:
    b = GraphBuilder()
    x = b.input("x", (4, 6))
    total = b.op("s", "sum", x, shape=(4,), dim=(1,), keepdim=False)
    bad = b.op("d", "div", x, total, shape=(4, 6))  # (4,) against (4, 6): per column, not per row
    no_keepdim = b.graph(bad)
    c = GraphBuilder()
    ints = c.input("n", (8,), dtype="int64")
    neg = c.op("neg", "neg", ints, shape=(8,), dtype="int64")
    int_graph = c.graph(neg)
    d = GraphBuilder()
    y = d.input("y", (8,))
    other = d.op("cumsum", "other", y, shape=(8,))
    other_graph = d.graph(other)
    return [
        (
            _reduction("batch_norm", (4, 3, 2), (4, 3, 2), eps=1e-5, momentum=0.1, training=True),
            "batch_norm",
        ),  # fmt: skip
        (_reduction("argmax", (4, 6), (4,), dim=(1,), keepdim=False), "int64"),
        (_reduction("group_norm", (2, 4, 3), (2, 4, 3), num_groups=2, eps=1e-5), "group_norm"),
        (_reduction("norm", (4, 6), (4,), dim=(1,), keepdim=False, p=3), "p=3"),
        (
            Case(
                "no_keepdim",
                no_keepdim,
                make_group(no_keepdim, "g0", "reduction", [total, bad], total),
                {},
                lambda f, p: None,
            ),
            "without keepdim",
        ),  # fmt: skip
        (
            Case(
                "ints",
                int_graph,
                make_group(int_graph, "g0", "pointwise", [neg]),
                {},
                lambda f, p: None,
            ),
            "int64",
        ),  # fmt: skip
        (
            Case(
                "other",
                other_graph,
                make_group(other_graph, "g0", "pointwise", [other]),
                {},
                lambda f, p: None,
            ),
            "not a pointwise op",
        ),  # fmt: skip
    ]


@pytest.mark.parametrize(
    ("case", "reason"), unsupported_cases(), ids=lambda v: getattr(v, "name", "")
)
def test_unsupported_groups_say_why(case: Case, reason: str) -> None:
    why = supports_triton(case.graph, case.group)
    assert why is not None and reason in why, why
    with pytest.raises(ValueError, match="cannot be written in Triton"):
        generate_triton(case.graph, case.group)


def load(path: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.gpu
def test_generated_kernels_match_torch_on_the_gpu(tmp_path: Path) -> None:
    """In this process: Triton was imported without the interpreter, so it compiles."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    for name, case in all_cases().items():
        generated = generate_triton(case.graph, case.group, {"block": 256, "rows": 2})
        module = load(write(generated, tmp_path, f"gpu_{name}"))
        feeds, params = (formula_inputs(), {}) if name == "formulas" else case.inputs()
        expected = case.reference(feeds, params)
        scope = {**vars(module), **{k: v.cuda() for k, v in feeds.items()}}
        scope["self"] = self_with({k: v.cuda() for k, v in params.items()})
        got = eval(generated.call, scope)  # noqa: S307 - the generated call expression
        got = got if isinstance(got, tuple) else (got,)
        expected = expected if isinstance(expected, tuple) else (expected,)
        for g, e in zip(got, expected, strict=True):
            assert torch.allclose(g.cpu(), e, atol=1e-4, rtol=1e-4, equal_nan=True), name
