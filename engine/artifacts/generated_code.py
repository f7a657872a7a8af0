"""Which kinds of generated kernel code a candidate file contains: "cpp" (a C++ extension
built with torch.utils.cpp_extension), "cuda" (one with CUDA sources) and "triton"
(`@triton.jit` kernels).

The summary records this for the best kernel, so a run's speedup can be told apart from
one that only wrapped the reference in torch.compile. It reads the source with `ast` (the
file is never imported) and looks for what the code does, not for words in comments.
"""

from __future__ import annotations

import ast

LANGUAGES = ("cpp", "cuda", "triton")
_BUILDERS = frozenset({"load_inline", "load", "CppExtension", "CUDAExtension"})


def generated_languages(code: str | None) -> list[str]:
    """The languages of generated kernels in `code`, in LANGUAGES order ([] for none)."""
    if not code:
        return []
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _name(node.func) in _BUILDERS and not _is_tl_load(node):
            keywords = {k.arg: k.value for k in node.keywords if k.arg}
            if _non_empty(keywords.get("cuda_sources")):
                found.add("cuda")
            elif _non_empty(keywords.get("cpp_sources")) or _name(node.func) == "load":
                found.add("cpp")
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                if _dotted(target) in ("triton.jit", "triton.autotune", "tl.jit"):
                    found.add("triton")
    return [language for language in LANGUAGES if language in found]


def _is_tl_load(node: ast.Call) -> bool:
    """`tl.load(ptr, ...)` in a Triton kernel reads memory; it builds nothing."""
    return _dotted(node.func) in ("tl.load", "triton.language.load")


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def _non_empty(value: ast.expr | None) -> bool:
    if value is None:
        return False
    if isinstance(value, ast.List | ast.Tuple):
        return bool(value.elts)
    if isinstance(value, ast.Constant):
        return bool(value.value)
    return True  # a variable: assume it holds sources
