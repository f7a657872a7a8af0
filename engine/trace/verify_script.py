"""The standalone `verify_{op}.py` written beside each recorded verification, and
the detection of what kind of kernel a candidate is.

The script is the proof behind a number in the trace: anyone with the project
installed can run it and see the same verdict. It embeds the exact EvalConfig
and the recorded verdict (as Python string literals built with `repr`, so no
recorded text can inject code) and reads the two sibling source files.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any, Literal

ImplType = Literal["cuda", "cpp", "triton", "torch"]
REFERENCE_FRAMEWORK = "torch"

_TRITON_DECORATOR = re.compile(r"^\s*@\s*triton\s*\.\s*(jit|autotune|heuristics)\b", re.M)
_LOAD_INLINE = re.compile(r"\bload_inline\s*\(")
_CUDA_SOURCES = re.compile(r"\bcuda_sources\s*=\s*(?!None\b|\[\s*\]|\(\s*\)|[\"']{2}(?![\"']))")


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Call):
        return _dotted(node.func)
    return ""


def _is_empty(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return not node.value
    if isinstance(node, ast.List | ast.Tuple):
        return not node.elts
    return False


def _detect_from_ast(tree: ast.AST) -> ImplType:
    uses_inline_cpp = uses_inline_cuda = uses_triton = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _dotted(node.func).split(".")[-1] == "load_inline":
            uses_inline_cpp = True
            for keyword in node.keywords:
                if keyword.arg == "cuda_sources" and not _is_empty(keyword.value):
                    uses_inline_cuda = True
            if len(node.args) >= 3 and not _is_empty(node.args[2]):  # positional cuda_sources
                uses_inline_cuda = True
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in node.decorator_list:
                if _dotted(decorator).startswith("triton."):
                    uses_triton = True
    if uses_inline_cuda:
        return "cuda"
    if uses_triton:
        return "triton"
    return "cpp" if uses_inline_cpp else "torch"


def detect_impl_type(source: str) -> ImplType:
    """cuda (load_inline with cuda_sources), triton (@triton.jit), cpp (load_inline,
    C++ only) or torch (plain PyTorch). Read from the syntax tree, so a kernel kind
    named only in a comment does not count; a source that does not parse is
    classified by text patterns."""
    try:
        return _detect_from_ast(ast.parse(source))
    except (SyntaxError, ValueError):
        pass
    if _LOAD_INLINE.search(source) and _CUDA_SOURCES.search(source):
        return "cuda"
    if _TRITON_DECORATOR.search(source):
        return "triton"
    return "cpp" if _LOAD_INLINE.search(source) else "torch"


def candidate_file_name(op: str, impl_type: str) -> str:
    """`{op}_{impl}.py`; a plain-PyTorch candidate would clash with the reference
    `{op}_torch.py`, so it is `{op}_torch_new.py` (KernelBench's ModelNew)."""
    if impl_type == REFERENCE_FRAMEWORK:
        return f"{op}_{impl_type}_new.py"
    return f"{op}_{impl_type}.py"


def reference_file_name(op: str) -> str:
    return f"{op}_{REFERENCE_FRAMEWORK}.py"


def verify_script_name(op: str) -> str:
    return f"verify_{op}.py"


_TEMPLATE = '''\
#!/usr/bin/env python3
"""Re-run STARK verification step {step} of task {task_id!r}, op {op!r}.

Written by the STARK trace. It evaluates the candidate beside this file against
the reference beside this file with the benchmarker and the EvalConfig recorded
at the time, prints the new verdict as JSON on stdout, and compares it with the
recorded one on stderr.

    python {script_name} [--device auto|cpu|cuda]

Needs the STARK project installed (`engine.bench`). Exit status: 0 when the new
verdict's `compiled` and `correct` equal the recorded ones, 1 when they differ,
2 when the verification could not be run at all. It also prints the STARK and torch
versions recorded with the verdict and the current ones, and warns when they differ.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REFERENCE_FILE = {reference_file!r}
CANDIDATE_FILE = {candidate_file!r}
EVAL_CONFIG = json.loads({config_json!r})
RECORDED = json.loads({recorded_json!r})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Re-run a recorded STARK verification.")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        help="override the recorded device (default: the device the verdict was recorded on)",
    )
    args = parser.parse_args(argv)
    try:
        from engine.bench import Benchmarker, EvalConfig
    except ImportError as exc:
        print(f"cannot import the STARK benchmarker ({{exc}}); install the project first",
              file=sys.stderr)
        return 2
    try:
        reference_src = (HERE / REFERENCE_FILE).read_text(encoding="utf-8")
        candidate_src = (HERE / CANDIDATE_FILE).read_text(encoding="utf-8")
    except OSError as exc:
        print(f"cannot read the recorded sources: {{exc}}", file=sys.stderr)
        return 2
    recorded_sha = RECORDED.get("candidate_sha256") or ""
    if recorded_sha and hashlib.sha256(candidate_src.encode()).hexdigest() != recorded_sha:
        print(f"warning: {{CANDIDATE_FILE}} differs from the evaluated candidate "
              "(edited, or a secret was redacted)", file=sys.stderr)
    config_data = dict(EVAL_CONFIG)
    if args.device:
        config_data["device"] = args.device
    config = EvalConfig.from_dict(config_data)
    with Benchmarker() as bench:
        result = bench.evaluate(reference_src, candidate_src, config)
    print(result.to_json(indent=2))
    report_versions()
    same = (result.compiled, result.correct) == (RECORDED.get("compiled"), RECORDED.get("correct"))
    print(
        f"recorded: compiled={{RECORDED.get('compiled')}} correct={{RECORDED.get('correct')}} "
        f"speedup={{RECORDED.get('speedup')}}\\n"
        f"now:      compiled={{result.compiled}} correct={{result.correct}} "
        f"speedup={{result.speedup}}\\n"
        + ("REPRODUCED" if same else f"NOT REPRODUCED: {{result.error}}"),
        file=sys.stderr,
    )
    return 0 if same else 1


def report_versions() -> None:
    """Recorded and current software versions on stderr; a warning when they differ,
    since a different STARK or torch may legitimately change the verdict."""
    recorded = RECORDED.get("versions") or {{}}
    try:
        from engine.trace.versions import describe, environment_versions, version_differences
    except ImportError:
        print("versions: this STARK cannot report its versions", file=sys.stderr)
        return
    current = environment_versions()
    print(f"versions recorded: {{describe(recorded) if recorded else 'not recorded'}}",
          file=sys.stderr)
    print(f"versions now:      {{describe(current)}}", file=sys.stderr)
    changes = version_differences(recorded, current)
    if changes:
        print("warning: versions differ from the recording (" + "; ".join(changes) + "); "
              "a changed verdict may come from the software, not the kernel", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
'''

_RECORDED_KEYS = ("compiled", "correct", "speedup", "stage", "error", "device", "candidate_sha256")


def pinned_config(eval_config: dict[str, Any], verdict: dict[str, Any] | None) -> dict[str, Any]:
    """The config to replay: `device="auto"` is pinned to the device the verdict was
    recorded on, so a rerun on a machine with a GPU checks the same thing."""
    config = dict(eval_config)
    recorded_device = str((verdict or {}).get("device") or "")
    if config.get("device", "auto") == "auto" and recorded_device:
        config["device"] = "cuda" if recorded_device.startswith("cuda") else "cpu"
    return config


def render_verify_script(
    *,
    op: str,
    task_id: str,
    step: int,
    reference_file: str,
    candidate_file: str,
    eval_config: dict[str, Any],
    verdict: dict[str, Any] | None,
    versions: dict[str, Any] | None = None,
) -> str:
    """`versions`: the software that produced the verdict (see engine.trace.versions)."""
    recorded: dict[str, Any] = {key: (verdict or {}).get(key) for key in _RECORDED_KEYS}
    recorded["versions"] = dict(versions or {})
    return _TEMPLATE.format(
        step=step,
        task_id=task_id,
        op=op,
        script_name=verify_script_name(op),
        reference_file=reference_file,
        candidate_file=candidate_file,
        config_json=json.dumps(pinned_config(eval_config, verdict), sort_keys=True),
        recorded_json=json.dumps(recorded, sort_keys=True),
    )
