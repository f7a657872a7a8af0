"""scripts/check_structure.py on small made-up trees: each rule fires on a violation and stays
quiet on the allowed patterns (lazy imports, stated long modules, the CLI's shared modules)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_structure.py"


@pytest.fixture(scope="module")
def check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_structure_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def run(check: ModuleType, root: Path, packages: tuple[str, ...] = ("engine",)) -> list[str]:
    return check.findings(check.scan(packages, root), check.DEFAULT_MAX_LINES)


def test_a_cycle_is_found_and_a_function_level_import_cannot_hide_it(
    check: ModuleType, tmp_path: Path
) -> None:
    root = tree(
        tmp_path,
        {
            "engine/__init__.py": "",
            "engine/a.py": "from engine import b\n",
            "engine/b.py": "def later():\n    from engine.a import thing\n    return thing\n",
        },
    )
    problems = run(check, root)
    assert "import cycle: engine.a <-> engine.b" in problems
    assert any(
        "engine/b.py:2: import of engine.a inside a function dodges a cycle" in p for p in problems
    )


def test_a_lazy_import_that_closes_no_cycle_is_allowed(check: ModuleType, tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "engine/__init__.py": "",
            "engine/heavy.py": "X = 1\n",
            "engine/light.py": "def use():\n    from engine.heavy import X\n    return X\n",
        },
    )
    assert run(check, root) == []


def test_a_long_module_needs_a_stated_reason(check: ModuleType, tmp_path: Path) -> None:
    body = "x = 1\n" * 450
    root = tree(
        tmp_path,
        {
            "engine/__init__.py": "",
            "engine/long.py": body,
            "engine/explained.py": '"""One procedure.\n\nstructure: long because its order is the defence."""\n'
            + body,
        },
    )
    problems = run(check, root)
    assert len(problems) == 1 and problems[0].startswith("engine/long.py: 450 lines (limit 400)")


def test_subcommands_share_through_common_modules_only(check: ModuleType, tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "engine/__init__.py": "",
            "engine/cli/__init__.py": "",
            "engine/cli/common.py": "",
            "engine/cli/main.py": "from engine.cli import batch, optimize\n",
            "engine/cli/optimize.py": "from engine.cli.common import *\n",
            "engine/cli/batch.py": "from engine.cli.optimize import helper\n",
        },
    )
    assert run(check, root) == [
        "engine/cli/batch.py: CLI module imports another CLI module (engine.cli.optimize)"
    ]


def test_typing_only_imports_make_no_cycle(check: ModuleType, tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "engine/__init__.py": "",
            "engine/a.py": "from engine import b\n",
            "engine/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from engine import a\n",
        },
    )
    assert run(check, root) == []


def test_the_script_exits_1_on_findings_and_2_on_a_missing_package(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "engine/__init__.py": "",
            "engine/a.py": "import engine.b\n",
            "engine/b.py": "import engine.a\n",
        },
    )
    found = subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(root), "--packages", "engine"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert found.returncode == 1 and "import cycle: engine.a <-> engine.b" in found.stdout
    missing = subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(root), "--packages", "nowhere"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and "no package folder nowhere" in missing.stderr
