"""The engine's layout rules (docs/engine.md): no cycles, dependencies one way, subcommands
sharing through engine.cli.common, and the old import paths the language server still uses."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
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


def test_the_whole_tree_has_no_structure_finding() -> None:
    check = _checker()
    assert check.findings(check.scan(check.DEFAULT_PACKAGES), check.DEFAULT_MAX_LINES) == []


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


def test_engine_cli_main_is_the_callable_entry_point() -> None:
    from engine.cli import main
    from engine.cli.main import main as dispatcher

    assert main is dispatcher and callable(main)
