"""The engine's layout rules (docs/engine.md): no cycles, dependencies one way, subcommands
sharing through engine.cli.common, and the old import paths the language server still uses."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
# helper-owned folders re-laid separately; their own findings are not this layout's
ELSEWHERE = ("engine/bench/", "engine/trace/", "stark_lsp/")
LAYERS_BELOW_SEARCH = ("engine.artifacts", "engine.agents")


def _checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "check_structure", ROOT / "scripts" / "check_structure.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_structure"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def test_engine_outside_bench_and_trace_has_no_structure_finding() -> None:
    check = _checker()
    problems = check.findings(check.scan(("engine",)), check.DEFAULT_MAX_LINES)
    others = ("engine.bench", "engine.trace")  # their cycles are named by module
    mine = [p for p in problems if not p.startswith(ELSEWHERE) and not any(o in p for o in others)]
    assert mine == []


def test_dependencies_point_one_way() -> None:
    modules = _checker().scan(("engine",))
    for name, info in modules.items():
        if name.startswith(LAYERS_BELOW_SEARCH):
            above = {
                t
                for t in info.imports
                if t.startswith(("engine.search", "engine.cli", "engine.batch"))
            }
            assert not above, f"{name} imports {above}"
        if name.startswith("engine.search"):
            above = {t for t in info.imports if t.startswith(("engine.cli", "engine.batch"))}
            assert not above, f"{name} imports {above}"
        if name.startswith("engine.batch"):
            assert not {t for t in info.imports if t.startswith("engine.cli")}, name


def test_cli_rule_allows_shared_modules_and_flags_subcommand_imports(tmp_path: Path) -> None:
    check = _checker()
    common = check.ModuleInfo("engine.cli.common", ROOT / "engine/cli/common.py", 10, False)
    optimize = check.ModuleInfo(
        "engine.cli.optimize",
        ROOT / "engine/cli/optimize.py",
        10,
        False,
        imports={"engine.cli.common", "engine.cli.batch"},
    )
    batch = check.ModuleInfo("engine.cli.batch", ROOT / "engine/cli/batch.py", 10, False)
    main = check.ModuleInfo(
        "engine.cli.main",
        ROOT / "engine/cli/main.py",
        10,
        False,
        imports={"engine.cli.common", "engine.cli.optimize", "engine.cli.batch"},
    )
    modules = {m.name: m for m in (common, optimize, batch, main)}
    problems = check.findings(modules, 400)
    assert problems == [
        "engine/cli/optimize.py: CLI module imports another CLI module (engine.cli.batch)"
    ]


def test_old_paths_still_import_for_the_language_server() -> None:
    import engine.artifacts.events as events
    import engine.artifacts.remeasured as remeasured
    import engine.events as old_events
    import engine.remeasure as old_remeasure

    assert old_events.NodeSnapshot is events.NodeSnapshot
    assert old_events.event_from_dict is events.event_from_dict
    assert old_remeasure.Remeasured is remeasured.Remeasured


def test_engine_cli_main_is_the_callable_entry_point() -> None:
    from engine.cli import main
    from engine.cli.main import main as dispatcher

    assert main is dispatcher and callable(main)
