#!/usr/bin/env python3
"""Check the package layout rules of docs/engine.md: no import cycles (imports inside
functions count, so a function-level import cannot dodge one), no module over the line
limit without a stated reason, and no CLI module importing another CLI module.

An import inside a function that closes no cycle is allowed: that is lazy loading (the CLI
imports torch only for the commands that need it), not a dodge.

Why a script: these rules decay one convenient import at a time, and a reviewer cannot see
a cycle in a diff. It reads source with `ast` only (never imports the code), so it runs in
a second and needs no torch.

    python scripts/check_structure.py            # exit 1 and one line per finding
    python scripts/check_structure.py --max-lines 400 --packages engine stark_lsp

A module may exceed the limit when its docstring (or a comment in its first 15 lines)
contains `structure: long because ...` saying why.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PACKAGES = ("engine", "stark_lsp")
DEFAULT_MAX_LINES = 400
LONG_REASON_MARK = "structure: long because"
# The command line: subcommand modules may not import each other; they share code through the
# CLI's common modules, and only the dispatcher imports every subcommand.
CLI_MODULE_PREFIXES = ("engine.cli",)
# (`engine.cli` itself re-exports the dispatcher's `main`, the entry point scripts import)
CLI_DISPATCHERS = frozenset({"engine.cli", "engine.cli.main", "engine.cli.__main__"})
CLI_SHARED = frozenset({"engine.cli.common", "engine.cli.progress"})


@dataclass(slots=True)
class ModuleInfo:
    name: str
    path: Path  # relative to the scanned root, as findings print it
    lines: int
    has_long_reason: bool
    imports: set[str] = field(default_factory=set)  # every engine/stark_lsp module it imports
    nested_imports: list[tuple[int, str]] = field(default_factory=list)  # (line, module)


def module_name(path: Path) -> str:
    """`engine/bench/worker.py` -> `engine.bench.worker` (a path relative to the root)."""
    parts = list(path.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve_relative(current: str, is_package: bool, level: int, target: str | None) -> str:
    base = current.split(".") if is_package else current.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imported_modules(node: ast.AST, current: str, is_package: bool, known: set[str]) -> list[str]:
    """The known modules an import statement brings in (`from a import b` counts `a.b` when
    `a.b` is a module, else `a`)."""
    found: list[str] = []
    if isinstance(node, ast.Import):
        for alias in node.names:
            found.append(alias.name)
    elif isinstance(node, ast.ImportFrom):
        base = (
            resolve_relative(current, is_package, node.level, node.module)
            if node.level
            else (node.module or "")
        )
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            found.append(sub if sub in known else base)
    return [_closest_known(name, known) for name in found if _closest_known(name, known)]


def _closest_known(name: str, known: set[str]) -> str:
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return ""


def _in_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    current = parents.get(node)
    while current is not None:
        if isinstance(current, ast.If) and "TYPE_CHECKING" in ast.unparse(current.test):
            return True
        current = parents.get(current)
    return False


def scan(packages: tuple[str, ...], root: Path = ROOT) -> dict[str, ModuleInfo]:
    """Every module of `packages` (folders under `root`), with its in-tree imports."""
    paths = [p.relative_to(root) for pkg in packages for p in sorted((root / pkg).rglob("*.py"))]
    known = {module_name(p) for p in paths}
    modules: dict[str, ModuleInfo] = {}
    for path in paths:
        text = (root / path).read_text(encoding="utf-8")
        tree = ast.parse(text, filename=str(path))
        name = module_name(path)
        head = (ast.get_docstring(tree) or "") + "\n".join(text.splitlines()[:15])
        info = ModuleInfo(name, path, len(text.splitlines()), LONG_REASON_MARK in head)
        parents = {
            child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            if _in_type_checking(node, parents):
                continue  # typing-only imports create no runtime cycle
            targets = imported_modules(node, name, path.name == "__init__.py", known)
            info.imports.update(t for t in targets if t != name)
            owner = parents.get(node)
            while owner is not None and not isinstance(
                owner, ast.FunctionDef | ast.AsyncFunctionDef
            ):
                owner = parents.get(owner)
            if owner is not None:
                info.nested_imports.extend((node.lineno, t) for t in targets)
        modules[name] = info
    return modules


def find_cycles(modules: dict[str, ModuleInfo]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:
        nonlocal counter
        work: list[tuple[str, list[str]]] = [(start, sorted(modules[start].imports))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, pending = work[-1]
            if pending:
                nxt = pending.pop()
                if nxt not in modules:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(modules[nxt].imports)))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))

    for name in sorted(modules):
        if name not in index:
            visit(name)
    return cycles


def _is_package_parent(importer: str, imported: str) -> bool:
    """`engine.bench.worker` importing `engine.bench` (its package's __init__) is how a
    package re-exports; a cycle through an __init__ is still reported by find_cycles."""
    return importer.startswith(imported + ".")


def findings(modules: dict[str, ModuleInfo], max_lines: int) -> list[str]:
    problems: list[str] = []
    component_of: dict[str, int] = {}
    for number, cycle in enumerate(find_cycles(modules)):
        problems.append(f"import cycle: {' <-> '.join(cycle)}")
        component_of.update(dict.fromkeys(cycle, number))
    for info in modules.values():
        rel = info.path
        if info.lines > max_lines and not info.has_long_reason:
            problems.append(
                f"{rel}: {info.lines} lines (limit {max_lines}); split it, or state why at its top "
                f"with '{LONG_REASON_MARK} ...'"
            )
        for line, target in sorted(set(info.nested_imports)):
            same_cycle = (
                info.name in component_of and component_of.get(target) == component_of[info.name]
            )
            if same_cycle:
                problems.append(
                    f"{rel}:{line}: import of {target} inside a function dodges a cycle"
                )
        if info.name.startswith(CLI_MODULE_PREFIXES) and info.name not in CLI_DISPATCHERS:
            for target in sorted(info.imports):
                if (
                    target.startswith(CLI_MODULE_PREFIXES)
                    and target not in CLI_SHARED
                    and not _is_package_parent(info.name, target)
                ):
                    problems.append(f"{rel}: CLI module imports another CLI module ({target})")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", nargs="+", default=list(DEFAULT_PACKAGES))
    parser.add_argument("--max-lines", type=int, default=DEFAULT_MAX_LINES)
    parser.add_argument("--root", type=Path, default=ROOT, help="folder holding the packages")
    args = parser.parse_args(argv)
    missing = [pkg for pkg in args.packages if not (args.root / pkg).is_dir()]
    if missing:
        parser.error(f"no package folder {', '.join(missing)} under {args.root}")
    problems = findings(scan(tuple(args.packages), args.root), args.max_lines)
    for problem in problems:
        print(problem)
    print(f"check_structure: {len(problems)} finding(s)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
