"""Fast unit tests of the pure parts: task classification, reference lookup,
static diagnostics, compiler-line mapping into load_inline strings, settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.bench.result import ErrorLocation, EvalResult
from stark_lsp import config, diagnostics, sourcemap
from stark_lsp.disk_watch import matches
from stark_lsp.tasks import DocumentKind, analyze, find_reference

from .helpers import TINY_REFERENCE

KERNEL_WITH_TWO_SOURCES = '''\
import torch
from torch.utils.cpp_extension import load_inline

header = "torch::Tensor scale(torch::Tensor x);"
body = """
torch::Tensor scale(torch::Tensor x) {
    auto y = x * 2.0
    return y;
}
"""
cuda_src = r"""
__global__ void k(float* x) {
    x[0] = undefined_thing;
}
"""
ext = load_inline("ext", cpp_sources=[header, body], cuda_sources=cuda_src, functions=["scale"])


class ModelNew(torch.nn.Module):
    def forward(self, x):
        return ext.scale(x)
'''


def test_classification_and_lines() -> None:
    info = analyze(TINY_REFERENCE)
    assert info.kind is DocumentKind.REFERENCE
    assert info.model is not None and info.model.line == 8 and info.model.forward_line == 12
    kernel = analyze(KERNEL_WITH_TWO_SOURCES)
    assert kernel.kind is DocumentKind.KERNEL and kernel.model_new is not None
    assert analyze("x = 1\n").kind is DocumentKind.OTHER


def test_reference_lookup_order(tmp_path: Path) -> None:
    task = tmp_path / "task"
    (task / "code").mkdir(parents=True)
    (task / "ref_7.py").write_text(TINY_REFERENCE)
    node = task / "code" / "node_0001.py"
    node.write_text("class ModelNew: pass\n")
    lookup = find_reference(node, analyze(node.read_text()))
    assert (lookup.how, lookup.path) == ("layout", task / "ref_7.py")
    best = task / "best_kernel.py"
    best.write_text("class ModelNew: pass\n")
    assert find_reference(best, analyze(best.read_text())).how == "layout"

    (tmp_path / "mine.py").write_text(TINY_REFERENCE)
    commented = tmp_path / "k.py"
    commented.write_text("# stark: reference=mine.py\nclass ModelNew: pass\n")
    lookup = find_reference(commented, analyze(commented.read_text()))
    assert (lookup.how, lookup.path) == ("comment", (tmp_path / "mine.py").resolve())

    missing = tmp_path / "m.py"
    missing.write_text("# stark: reference=nope.py\nclass ModelNew: pass\n")
    assert "not found" in (find_reference(missing, analyze(missing.read_text())).problem or "")

    same = tmp_path / "same.py"
    same.write_text(TINY_REFERENCE + "\n\nclass ModelNew(Model):\n    pass\n")
    assert find_reference(same, analyze(same.read_text())).how == "same-file"

    alone = tmp_path / "alone.py"
    alone.write_text("class ModelNew: pass\n")
    assert find_reference(alone, analyze(alone.read_text())).path is None


def test_comment_inside_string_is_not_a_reference_comment() -> None:
    source = 's = """\n# stark: reference=x.py\n"""\nclass ModelNew: pass\n'
    assert analyze(source).reference_comment is None


@pytest.mark.parametrize(
    ("source", "code", "line"),
    [
        (TINY_REFERENCE.replace("y = x * 1.5 + 0.25", "y = x * (1.5 + 0.25"), "syntax-error", 13),
        (TINY_REFERENCE.replace("def get_inputs()", "def other_inputs()"), "missing-get_inputs", 8),
        (
            TINY_REFERENCE.replace("def get_init_inputs()", "def nope()"),
            "missing-get_init_inputs",
            8,
        ),
        (TINY_REFERENCE.replace("def forward(", "def fwd("), "missing-forward", 8),
        (
            TINY_REFERENCE.replace("class Model(nn.Module)", "class Other(nn.Module)"),
            "missing-model",
            18,
        ),
        (TINY_REFERENCE.replace("def get_inputs()", "def get_inputs(n)"), "bad-get_inputs", 18),
    ],
)
def test_reference_diagnostics_sit_on_real_lines(source: str, code: str, line: int) -> None:
    found = diagnostics.static_diagnostics(source, analyze(source))
    assert [(d.code, d.range.start.line) for d in found if d.code == code] == [(code, line)], found


def test_clean_reference_has_no_diagnostics_and_other_files_are_left_alone() -> None:
    assert diagnostics.static_diagnostics(TINY_REFERENCE, analyze(TINY_REFERENCE)) == []
    broken_other = "def f(:\n"
    assert diagnostics.static_diagnostics(broken_other, analyze(broken_other)) == []


GCC_LOG = """\
[1/2] c++ -MMD -MF main.o.d -c /cache/ext/main.cpp -o main.o
FAILED: main.o
/cache/ext/main.cpp:5:21: error: expected ',' or ';' before 'return'
    5 |     auto y = x * 2.0
      |                     ^
/cache/ext/cuda.cu(6): error: identifier "undefined_thing" is undefined
ninja: build stopped: subcommand failed.
"""


def test_compiler_messages_map_into_the_source_strings() -> None:
    messages = sourcemap.parse_compiler_messages(GCC_LOG)
    assert [(m.file.split("/")[-1], m.line, m.severity) for m in messages] == [
        ("main.cpp", 5, "error"),
        ("cuda.cu", 6, "error"),
    ]
    info = analyze(KERNEL_WITH_TWO_SOURCES)
    assert info.tree is not None
    lines = KERNEL_WITH_TWO_SOURCES.splitlines()
    # main.cpp = include line + header + body: line 5 is `auto y = x * 2.0` (file line 7)
    cpp = sourcemap.map_compiler_line(messages[0], info.tree, KERNEL_WITH_TWO_SOURCES)
    assert cpp is not None and lines[cpp.line].strip() == "auto y = x * 2.0"
    # cuda.cu = 3 include lines + the raw string (which opens with a newline): line 6
    cuda = sourcemap.map_compiler_line(messages[1], info.tree, KERNEL_WITH_TWO_SOURCES)
    assert cuda is not None and lines[cuda.line].strip() == "x[0] = undefined_thing;"


def test_generated_file_on_disk_wins_over_the_rebuilt_one() -> None:
    info = analyze(KERNEL_WITH_TWO_SOURCES)
    assert info.tree is not None
    generated = "// two extra lines from a future torch\n// ...\n#include <torch/extension.h>\n"
    generated += "torch::Tensor scale(torch::Tensor x);\n" + info.tree.body[3].value.value  # body
    message = sourcemap.CompilerMessage("main.cpp", 7, 21, "error", "expected ';'")
    found = sourcemap.map_compiler_line(message, info.tree, KERNEL_WITH_TWO_SOURCES, generated)
    assert found is not None
    assert KERNEL_WITH_TWO_SOURCES.splitlines()[found.line].strip() == "auto y = x * 2.0"


def test_verdict_diagnostics_for_each_stage() -> None:
    info = analyze(KERNEL_WITH_TWO_SOURCES)
    data = {"jobId": "job-1", "nodeId": 3, "uri": "file:///k.py"}
    compile_fail = EvalResult(compiled=False, stage="compile", error="build failed", log=GCC_LOG)
    found = diagnostics.verdict_diagnostics(KERNEL_WITH_TWO_SOURCES, info, compile_fail, data)
    assert [d.range.start.line for d in found] == [6, 12]
    assert all(d.data["jobId"] == "job-1" and d.data["failing"] for d in found)

    runtime = EvalResult(
        compiled=True,
        stage="runtime",
        error="RuntimeError: boom",
        error_location=ErrorLocation(21, "forward"),
    )
    (diag,) = diagnostics.verdict_diagnostics(KERNEL_WITH_TWO_SOURCES, info, runtime, data)
    assert diag.range.start.line == 20 and "boom" in diag.message

    wrong = EvalResult(
        compiled=True,
        stage="correctness",
        error="mismatch",
        max_abs_err=0.5,
        flags=["excessive_speedup"],
    )
    found = diagnostics.verdict_diagnostics(KERNEL_WITH_TWO_SOURCES, info, wrong, data)
    assert found[0].range.start.line == 19 and "max abs err 0.5" in found[0].message
    assert found[1].severity == diagnostics.types.DiagnosticSeverity.Warning
    assert found[1].data["flag"] == "excessive_speedup"


def test_settings_merge_validates_and_hides_the_key() -> None:
    settings, problems = config.merge(
        config.Settings(),
        {"rounds": 3, "watch": {"globs": ["**/ref_*.py"]}, "apiKey": "sk-secret", "device": "tpu"},
    )
    assert settings.rounds == 3 and settings.watch_globs == ("**/ref_*.py",)
    assert problems == ["stark.device must be one of auto, cpu, cuda, not 'tpu'"]
    assert "sk-secret" not in repr(settings) and "sk-secret" not in str(settings.redacted())
    nested, _ = config.merge(config.Settings(), {"stark": {"maxConcurrentJobs": 4}})
    assert nested.max_concurrent_jobs == 4


def test_watch_globs() -> None:
    root = Path("/w")
    assert matches(root / "a/b/ref_1.py", [root], ("**/ref_*.py",))
    assert matches(root / "ref_1.py", [root], ("**/ref_*.py",))
    assert not matches(root / "a/b.py", [root], ("*.py",))  # anchored at the folder
    assert matches(root / "a/b.py", [root], ("a/*.py",))
    assert not matches(root / "a/b/c.py", [root], ("a/*.py",))  # `*` stays in its folder
    assert not matches(Path("/elsewhere/ref_1.py"), [root], ("**/ref_*.py",))


def test_tolerance_settings_take_positive_numbers_or_null() -> None:
    settings, problems = config.merge(config.Settings(), {"atol": 1e-4, "rtol": 3})
    assert (settings.atol, settings.rtol, problems) == (1e-4, 3.0, [])
    assert config.tolerance_args(settings) == ["--atol", "0.0001", "--rtol", "3.0"]
    for bad in (-1e-3, float("nan"), float("inf"), True, "1e-3", [1]):
        kept, problems = config.merge(settings, {"atol": bad})
        assert kept.atol == 1e-4, bad  # the previous value stays
        (problem,) = problems
        assert problem.startswith("stark.atol must be a finite number >= 0"), problem
    cleared, problems = config.merge(settings, {"atol": None, "rtol": None})
    assert (cleared.atol, cleared.rtol, problems) == (None, None, [])
    assert config.tolerance_args(cleared) == []
